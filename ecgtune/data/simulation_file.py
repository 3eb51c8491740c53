"""`simulation.json`: what a simulated PTB-XL-format tree (`ecgtune data simulate`) records about itself.

`ecgtune.data.simulated_ptbxl` writes it, last, into the tree; the PTB-XL converter (`ecgtune.data.ptbxl`)
reads the label-noise floor from it, so a store converted from a simulated tree carries its floor. Its
own module so that the converter of real PTB-XL never imports the simulator (imports run one way:
simulated_ptbxl -> ptbxl for the split rule, both -> this file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SIMULATION_FILE = "simulation.json"


def label_noise_floor(root: str | os.PathLike, split: str | None = None) -> dict[str, float | None]:
    """The label-noise floor of a simulated tree: per target, the MAE a perfect model would show
    against the labels in its 12sl_features.csv (bpm, ms) = mean |written - exact| over the tree's
    ECGs, or over one split ("train", "val", "test"; None where the split has no ECGs). All zero
    without --label-noise.

    Raises FileNotFoundError if `root` has no simulation.json, ValueError for an unknown split.
    """
    path = Path(root) / SIMULATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a tree written by `ecgtune data simulate`")
    info = json.loads(path.read_text())["label_noise"]
    if split is None:
        return dict(info["floor_mae"])
    if split not in info["floor_mae_by_split"]:
        raise ValueError(f"unknown split {split!r}; the tree has {list(info['floor_mae_by_split'])}")
    return dict(info["floor_mae_by_split"][split])

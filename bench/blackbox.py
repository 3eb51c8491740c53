"""Recorded curves and their surrogate behind one small interface, as syne-tune's blackbox repository does:
a configuration of the table's space in, the epochs a trial of it would report and what each costs out.

    bb = load_blackbox()                          # the surrogate fitted on the committed table
    bb.curve(config)                              # [{epoch, stage, finetune_epoch, objective, MAEs...}, ...]
    bb.costs(config)                              # StageCosts: seconds per epoch of each stage, load

`SurrogateBlackbox` answers for any configuration (bench/surrogate.py); `TabularBlackbox` answers with the
recorded curve of the nearest recorded configuration in the unit cube (a configuration of the table is its
own nearest; "tabular-by-backbone": the nearest backbone first, for replays that share backbones), for
checks on held-out rows. Costs come from bench/cost_model.py in both.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench.cost_model import TIMING_FILE, CostModel, StageCosts, asha_mean_epochs, shipped_scale
from bench.curve_table import TABLE_FILE, CurveTable, backbone_keys, load_space_spec
from bench.surrogate import METRICS, SURROGATE_FILE, fit_on, load_surrogate, usable
from bench.unit_cube import cube_keys, encode


def table_finetune_fraction() -> float:
    """Of the table's fine-tuning epochs, the share an average trial trains under the table's ASHA."""
    spec = load_space_spec()
    asha = spec.search.asha
    epochs = spec.stages.finetune.epochs
    return asha_mean_epochs(asha.grace_period, asha.reduction_factor, epochs) / epochs


class Blackbox(Protocol):
    pretrain_epochs: int
    finetune_epochs: int

    def curve(self, config: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def costs(self, config: Mapping[str, Any]) -> StageCosts: ...


class SurrogateBlackbox:
    def __init__(self, surrogate_file: Path | None = SURROGATE_FILE, table_file: Path = TABLE_FILE,
                 timing_file: Path = TIMING_FILE, calibrated: bool = True):  # fmt: skip
        if surrogate_file is None:
            recipe = json.loads(SURROGATE_FILE.read_text())
            self.surrogate = fit_on(table_file, recipe["model"], recipe["seed"])
        else:
            self.surrogate = load_surrogate(surrogate_file, table_file)
        self.pretrain_epochs = self.surrogate.pretrain_epochs
        self.finetune_epochs = self.surrogate.finetune_epochs
        self.cost_model = CostModel(
            shipped_scale(),
            timing_file,
            self.pretrain_epochs,
            self.finetune_epochs,
            table_finetune_fraction() if calibrated else None,
        )

    def curve(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.surrogate.curve(config)

    def final_objectives(self, configs: list[Mapping[str, Any]]) -> np.ndarray:
        return self.surrogate.final_objective(configs)

    def costs(self, config: Mapping[str, Any]) -> StageCosts:
        return self.cost_model.costs(config)


class TabularBlackbox:
    """The recorded rows only: a configuration gets the curve of its nearest recorded configuration.

    `by_backbone`: nearest in two steps, the recorded backbone nearest in the backbone's coordinates, then
    that backbone's fine-tuning setting nearest in the others. Backbone sharing needs it: trials that
    share a backbone (the same model.* and pretrain.* values) then replay one recorded pretraining, as
    they would train one; nearest over all coordinates can give a trial that reused a backbone, and pays
    only its load, the curve of another backbone's row."""

    def __init__(
        self, rows: list[dict[str, Any]], timing_file: Path = TIMING_FILE, by_backbone: bool = False
    ):
        self.rows = usable(rows)
        self.space = load_space_spec().search.space
        self.keys = cube_keys(self.space)
        self.points = np.array([encode(self.space, self.keys, r["config"]) for r in self.rows])
        self.by_backbone = by_backbone
        is_backbone = np.array([k in backbone_keys(self.space) for k in self.keys])
        self.backbone_dims, self.finetune_dims = is_backbone, ~is_backbone
        self.backbone_of = np.array([r["backbone"] for r in self.rows])
        first = self.rows[0]["epochs"]
        self.pretrain_epochs = sum(e["stage"] == "pretrain" for e in first)
        self.finetune_epochs = len(first) - self.pretrain_epochs
        self.cost_model = CostModel(
            shipped_scale(),
            timing_file,
            self.pretrain_epochs,
            self.finetune_epochs,
            table_finetune_fraction(),
        )

    def nearest(self, config: Mapping[str, Any]) -> dict[str, Any]:
        gap = (self.points - encode(self.space, self.keys, config)) ** 2
        if not self.by_backbone:
            return self.rows[int(np.argmin(gap.sum(axis=1)))]
        backbone = self.backbone_of[int(np.argmin(gap[:, self.backbone_dims].sum(axis=1)))]
        d = np.where(self.backbone_of == backbone, gap[:, self.finetune_dims].sum(axis=1), np.inf)
        return self.rows[int(np.argmin(d))]

    def curve(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        epochs = self.nearest(config)["epochs"]
        return [
            {**{k: e[k] for k in ("epoch", "stage", "stage_epoch", "finetune_epoch", "diverged", *METRICS)},
             "total_epochs": len(epochs)}
            for e in epochs
        ]  # fmt: skip

    def final_objectives(self, configs: list[Mapping[str, Any]]) -> np.ndarray:
        return np.array([self.nearest(c)["epochs"][-1]["objective"] for c in configs])

    def costs(self, config: Mapping[str, Any]) -> StageCosts:
        return self.cost_model.costs(self.nearest(config)["config"])


class ToyBlackbox:
    """A curve that is a plain function of the configuration, for tests of the replay (no table, no
    fitting), as long as the table's: 3 pretraining epochs at objective 2, then 9 fine-tuning epochs
    falling towards a level set by the fine-tuning learning rate and the number of residual modules.
    Costs: 5 s per pretraining epoch, 1 s per fine-tuning epoch, 0.1 s to load a stored backbone."""

    pretrain_epochs, finetune_epochs = 3, 9

    @staticmethod
    def level(config: Mapping[str, Any]) -> float:
        return 1.0 + (np.log10(config["finetune.lr"]) + 2.0) ** 2 + 0.1 * config["model.num_blocks"]

    def curve(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        epochs = [
            {"stage": "pretrain", "stage_epoch": k, "finetune_epoch": 0, "objective": 2.0} for k in (1, 2, 3)
        ]
        for k in range(1, 10):
            value = self.level(config) + 0.5 / k
            epochs.append({"stage": "finetune", "stage_epoch": k, "finetune_epoch": k, "objective": value})
        for i, e in enumerate(epochs):
            e.update({"epoch": i + 1, "total_epochs": len(epochs), "diverged": False})
            e.update({f"ptbxl_val_mae_{t}": 10 * e["objective"] for t in ("hr", "pr", "qrs", "qt")})
        return epochs

    def costs(self, config: Mapping[str, Any]) -> StageCosts:
        return StageCosts(5.0, 1.0, 0.1)

    def final_objectives(self, configs: list[Mapping[str, Any]]) -> np.ndarray:
        return np.array([self.level(c) + 0.5 / 9 for c in configs])


@functools.cache
def load_blackbox(kind: str = "surrogate", path: str | None = None) -> Blackbox:
    """The blackbox a replay uses, once per process: the committed surrogate, ("tabular", table) the
    rows of a packed table ("tabular-by-backbone": nearest backbone first, see `TabularBlackbox`),
    "surrogate-proportional" (the surrogate with stage costs in proportion to the shipped sweep's ECG
    counts, uncalibrated), or "toy" (tests)."""
    if kind == "toy":
        return ToyBlackbox()
    if kind == "surrogate-fit":  # fitted afresh on `path` (a subset of the table), no committed recipe
        return SurrogateBlackbox(surrogate_file=None, table_file=Path(path))
    if kind in ("tabular", "tabular-by-backbone"):
        rows = CurveTable(Path(path) if path else TABLE_FILE).main_rows()
        return TabularBlackbox(rows, by_backbone=kind == "tabular-by-backbone")
    if kind == "surrogate-proportional":  # pretraining charged in proportion, not to the shipped share
        return SurrogateBlackbox(table_file=Path(path) if path else TABLE_FILE, calibrated=False)
    return SurrogateBlackbox(table_file=Path(path) if path else TABLE_FILE)

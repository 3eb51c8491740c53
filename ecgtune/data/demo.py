"""The embedded default data: small, made here, built in a few minutes on 2 cores.

It is a **stand-in**, not PTB-XL or the published DeepFake set:

- `deepfake`: ECGs from the very GAN that produced the DeepFake dataset
  (`deepfake-ecg`), labelled by ecgtune's default delineator (neurokit2),
  since generated ECGs carry no MUSE labels. Pretraining data.
- `ptbxl`: calibration ECGs from ecgtune's own simulator (`ecgtune data simulate`):
  12 leads from a cardiac dipole whose HR, PR, QRS and QT are parameters, so the
  labels are exact, with the label noise real measurement programs disagree by
  added (its floor is known and printed beside every MAE). A different generator
  than the GAN, so fine-tuning faces a real domain shift. The tree is written in
  PTB-XL's published format (WFDB `records500/`, `ptbxl_database.csv` with
  patients and `strat_fold`, PTB-XL+'s `features/12sl_features.csv`) and read back
  through the real PTB-XL loader, so the demo runs the same code path as the real
  download; 2,200 ECGs give a validation fold of over 200.

Point ecgtune at real data with `ecgtune data ptbxl` / `ecgtune data deepfake`.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ecgtune.data.locate import DEMO_STORES, demo_root, is_store, running_as_ray_job
from ecgtune.data.store import ECGStore
from ecgtune.paths import claim_output_dir, marker_kind, write_marker

if TYPE_CHECKING:
    from ecgtune.spec import StoreSpec

N_DEEPFAKE = 640
N_PTBXL = 2200
SEED = 0


# What a demo root holds; a root of only these, written before roots were marked, is adopted as ecgtune's.
DEMO_ENTRIES = frozenset({"deepfake", "ptbxl", "ptbxl-format", ".ptbxl-format.building", ".build.lock"})


def claim_demo_root(root: Path) -> Path:
    """The demo root, checked: ecgtune builds (and replaces) demo data only in a directory it owns."""
    root = Path(root)
    if root.is_dir() and marker_kind(root) is None and (root / "ptbxl-format" / ".complete").is_file():
        if {p.name for p in root.iterdir()} <= DEMO_ENTRIES:
            write_marker(root, "demo")
    return claim_output_dir(root, "demo")


@contextmanager
def _lock(root: Path) -> Iterator[None]:
    """One builder per node: a second process waits, then finds the store built."""
    claim_demo_root(root)
    with open(root / ".build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_demo_deepfake(root: Path, rebuild: bool = False) -> tuple[ECGStore, bool]:
    from ecgtune.data.generate import build_generated_store

    return build_generated_store(root / "deepfake", n=N_DEEPFAKE, seed=SEED, rebuild=rebuild)


def build_demo_ptbxl(root: Path, rebuild: bool = False) -> tuple[ECGStore, bool]:
    """Simulated PTB-XL (`ecgtune data simulate`, label noise on) written as the real download, then
    converted by the real PTB-XL loader."""
    from ecgtune.data.ptbxl import convert_ptbxl
    from ecgtune.data.simulated_ptbxl import write_simulated_ptbxl
    from ecgtune.data.simulation_file import SIMULATION_FILE

    source = root / "ptbxl-format"
    if (source / ".complete").is_file() and not (source / SIMULATION_FILE).exists():
        shutil.rmtree(source)  # the neurokit2 stand-in of ecgtune <= 0.1, written by this module
    info = source / SIMULATION_FILE
    current = info.is_file() and _recipe(json.loads(info.read_text())) == _recipe(None)
    if rebuild or not current:
        write_simulated_ptbxl(source, N_PTBXL, SEED, label_noise=True, rebuild=True, progress=True)
    return convert_ptbxl(source, root / "ptbxl", label_source="12sl", rebuild=rebuild)


def _recipe(info: dict | None) -> dict:
    """What the demo's simulated tree must have been made with (None: the current recipe)."""
    from ecgtune.data.simulate import GENERATOR_VERSION

    if info is None:
        return {"n": N_PTBXL, "seed": SEED, "generator_version": GENERATOR_VERSION, "label_noise": True}
    return {
        "n": info.get("n"),
        "seed": info.get("seed"),
        "generator_version": info.get("generator_version"),
        "label_noise": (info.get("options") or {}).get("label_noise"),
    }


def build_demo(root: Path, rebuild: bool = False) -> list[tuple[ECGStore, bool]]:
    """Build (or reuse) both demo stores under `root`."""
    with _lock(root):
        return [build_demo_deepfake(root, rebuild), build_demo_ptbxl(root, rebuild)]


def ensure_demo_data(stores: Iterable[StoreSpec | None]) -> None:
    """Build (or check, cheaply) the demo stores when `stores` names one: the explicit step `ecgtune
    sweep` and `ecgtune train` take before resolving their stores, once per node, with a progress line
    when a store is missing. Inside a Ray job nothing is built (its working directory is a temporary
    copy): `require_store` then fails at once if the stores are not already below $ECGTUNE_DATA/demo."""
    if running_as_ray_job() or not any(s is not None and s.demo is not None for s in stores):
        return
    root = demo_root()
    if not all(is_store(root / name) for name in DEMO_STORES):
        print(
            f"ecgtune: building the demo stores in {root} (first use: a few minutes on 2 cores; "
            f"`ecgtune data demo --root {root}` builds them ahead)",
            file=sys.stderr,
            flush=True,
        )
    build_demo(root)  # cheap when both stores are current: their keys are checked, nothing is rebuilt

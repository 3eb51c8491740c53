"""The embedded default data: small, made here, built in a few minutes on 2 cores.

It is a **stand-in**, not PTB-XL or the published DeepFake set:

- `deepfake`: ECGs from the very GAN that produced the DeepFake dataset
  (`deepfake-ecg`), labelled by ecgtune's default delineator (neurokit2),
  since generated ECGs carry no MUSE labels.
- `ptbxl`: ECGs from a *different* generator (neurokit2's 12-lead simulator),
  so fine-tuning faces a real domain shift. They are first written as a
  PTB-XL-format directory (WFDB `records500/`, `ptbxl_database.csv` with
  patients and `strat_fold`, a PTB-XL+-format `12sl_features.csv` holding the
  delineator's labels) and then read back through the real PTB-XL loader, so
  the demo exercises the same code path as the real download.

Point ecgtune at real data with `ecgtune data ptbxl` / `ecgtune data deepfake`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ecgtune.data.store import ECGStore, content_key
from ecgtune.paths import claim_output_dir, marker_kind, write_marker

N_DEEPFAKE = 640
N_PTBXL = 200
SEED = 0
DEMO_VERSION = 1  # bump when the recipe below changes, so cached demo stores rebuild


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


def _simulate(args: tuple[int, float]) -> np.ndarray:
    import neurokit2 as nk

    ecg_id, heart_rate = args
    df = nk.ecg_simulate(
        duration=10,
        sampling_rate=500,
        heart_rate=heart_rate,
        method="multileads",
        noise=0.02,
        random_state=ecg_id,
    )
    return df[["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]].to_numpy().T


def write_ptbxl_standin(directory: Path, n: int = N_PTBXL, seed: int = SEED) -> Path:
    """Write a PTB-XL-format directory of simulated ECGs with PTB-XL+-format labels; return it."""
    from ecgtune.data.labels import label_ecgs
    from ecgtune.data.ptbxl import write_database, write_features, write_record

    rng = np.random.default_rng(seed)
    ecg_ids = np.arange(1, n + 1)
    # Some patients have two recordings, as in PTB-XL; folds are assigned per patient.
    patient_of = np.minimum(np.arange(n) - rng.binomial(1, 0.15, n), np.arange(n)).clip(0)
    patients = np.unique(patient_of)
    fold_of_patient = {p: int(i % 10) + 1 for i, p in enumerate(rng.permutation(patients))}
    heart_rates = rng.uniform(48, 110, n)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        signals = list(
            pool.map(_simulate, zip(ecg_ids.tolist(), heart_rates.tolist(), strict=True), chunksize=8)
        )
    for ecg_id, sig in zip(ecg_ids, signals, strict=True):
        write_record(directory, int(ecg_id), sig)
    rows = pd.DataFrame(
        {
            "ecg_id": ecg_ids,
            "patient_id": 10000 + patient_of,
            "scp_codes": [
                {"NORM": 100.0, "SR": 0.0} if rng.random() < 0.9 else {"NORM": 0.0, "SR": 0.0}
                for _ in ecg_ids
            ],
            "strat_fold": [fold_of_patient[p] for p in patient_of],
        }
    )
    write_database(directory, rows)
    # Leads I, II, V1-V6 (rows 0, 1, 6..11) are what ecgtune reads; label exactly those.
    eight = np.stack(signals)[:, [0, 1, 6, 7, 8, 9, 10, 11], :]
    labels, _ = label_ecgs(eight, progress=False)
    labels.insert(0, "ecg_id", ecg_ids)
    write_features(directory / "features" / "12sl_features.csv", labels, source="12sl", seed=seed)
    return directory


def build_demo_ptbxl(root: Path, rebuild: bool = False) -> tuple[ECGStore, bool]:
    from ecgtune.data.ptbxl import convert_ptbxl

    source = root / "ptbxl-format"
    marker = source / ".complete"
    if rebuild or not marker.is_file() or marker.read_text() != _recipe_key():
        tmp = root / ".ptbxl-format.building"
        if tmp.exists():
            shutil.rmtree(tmp)
        write_ptbxl_standin(tmp)
        (tmp / ".complete").write_text(_recipe_key())
        if source.exists():
            shutil.rmtree(source)
        tmp.rename(source)
    return convert_ptbxl(source, root / "ptbxl", label_source="12sl", rebuild=rebuild)


def _recipe_key() -> str:
    return content_key({"n": N_PTBXL, "seed": SEED, "version": DEMO_VERSION})


def build_demo(root: Path, rebuild: bool = False) -> list[tuple[ECGStore, bool]]:
    """Build (or reuse) both demo stores under `root`."""
    with _lock(root):
        return [build_demo_deepfake(root, rebuild), build_demo_ptbxl(root, rebuild)]


def ensure_demo_store(name: str, root: Path) -> Path:
    """Path of one demo store, building both on first use."""
    if name not in ("deepfake", "ptbxl"):
        raise ValueError(f"unknown demo store {name!r}; allowed: deepfake, ptbxl")
    build_demo(root)  # cheap when both stores are current: their keys are checked, nothing is rebuilt
    return root / name

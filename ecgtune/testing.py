"""Tiny learnable stores for tests and benchmarks of the stages, the trial and the sweep (seconds, not
minutes). Not used by ecgtune itself: it lives in the package so that tests/ and bench/ share one copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ecgtune.data.store import ECGStore, StoreWriter


def synthetic_ecgs_with_labels(n: int, seed: int, gain: float = 1.0) -> tuple[np.ndarray, pd.DataFrame]:
    """ECG-like arrays whose amplitude sets all four labels (so a tiny model can learn them).

    `gain` scales the signal without changing the labels: a domain shift between two stores.
    """
    rng = np.random.default_rng(seed)
    amp = rng.uniform(0.2, 1.0, n)
    t = np.arange(5000) / 500
    wave = np.sin(2 * np.pi * 1.2 * t)[None, None, :] * np.ones((1, 8, 1))
    mv = gain * amp[:, None, None] * wave + 0.02 * rng.standard_normal((n, 8, 5000))
    labels = pd.DataFrame(
        {"hr": 50 + 50 * amp, "pr": 120 + 80 * amp, "qrs": 80 + 30 * amp, "qt": 350 + 100 * amp}
    )
    return np.rint(mv * 1000).astype(np.int16), labels


def write_synthetic_store(
    path: Path, n: int, seed: int, gain: float = 1.0, source: str = "synthetic"
) -> ECGStore:
    signals, labels = synthetic_ecgs_with_labels(n, seed, gain)
    ids = [f"{source}-{seed}-{i}" for i in range(n)]
    labels.insert(0, "record_id", ids)
    labels.insert(1, "patient_id", ids)
    # 60% train, 20% val, 20% test, interleaved
    labels.insert(2, "split", [("train", "train", "train", "val", "test")[i % 5] for i in range(n)])
    with StoreWriter(path, {"source": source, "key": f"{source}-{n}-{seed}-{gain}"}) as w:
        w.append(signals, labels)
    return w.store


def write_trial_stores(root: Path) -> Path:
    """A DeepFake-like and a PTB-XL-like store for trials, with PTB-XL's test fold file removed:
    a trial must never read the test fold, and without its file any attempt fails loudly."""
    write_synthetic_store(root / "deepfake", 40, seed=0, source="deepfake")
    write_synthetic_store(root / "ptbxl", 30, seed=1, gain=1.5, source="ptbxl")
    (root / "ptbxl" / "test.i16").unlink()
    return root

"""The benchmark data set: N ECGs written both as an ecgtune store and as one `.asc` file per ECG (the
published DeepFake format), from the package's GAN or, where it is missing (the GPU image), from
ECG-like synthetic signals. Used by the input-pipeline, throughput, data-stall and GPU scripts."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class BenchData:
    """N ECGs in both formats: an ecgtune store (all in the train split) and one `.asc` per ECG."""

    root: Path
    store_path: Path
    asc_paths: list[Path]
    targets: np.ndarray  # (n, 4) float32: hr bpm, pr, qrs, qt ms
    unique: int  # distinct ECGs; ECG i is distinct ECG i % unique


def gan_ecgs(n: int, seed: int = 0) -> np.ndarray:
    """`n` DeepFake ECGs from the package's GAN: int16 (n, 8, 5000) µV, as the published `.asc` hold."""
    from ecgtune.data.generate import generate_ecgs

    return np.concatenate(list(generate_ecgs(n, seed=seed, batch_size=min(n, 64), progress=False)))


def synthetic_signals(n: int, seed: int = 0) -> np.ndarray:
    """`n` ECG-like int16 (n, 8, 5000) µV signals without the GAN: a ~70 bpm spike train with a slower
    wave, baseline wander and noise, amplitudes up to ~±1.5 mV per lead. For machines without the
    `deepfake-ecg` package (the GPU image): compute does not depend on the values, and an `.asc` of
    these has numbers of as many digits as a GAN ECG's, so parsing costs the same."""
    rng = np.random.default_rng(seed)
    t = np.arange(5000) / 500.0
    out = np.empty((n, 8, 5000), np.int16)
    for i in range(n):
        hr = rng.uniform(55, 95) / 60.0  # beats per second
        phase = (t * hr + rng.uniform()) % 1.0
        beat = np.exp(-(((phase - 0.4) / 0.012) ** 2)) - 0.3 * np.exp(-(((phase - 0.7) / 0.05) ** 2))
        gain = rng.uniform(300, 1500, size=(8, 1))
        wander = 80 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
        out[i] = np.rint(gain * beat + wander + rng.normal(0, 15, size=(8, 5000)))
    return out


def write_bench_data(
    root: Path, n: int, unique: int = 64, seed: int = 0, source: str = "gan", asc: bool = True
) -> BenchData:
    """Write `n` ECGs to `root` as a store and as `.asc` files (`write_asc`, the published format).

    `unique` distinct ECGs are made and repeated (ECG i = distinct i % unique): the files are
    separate files with realistic content (parse cost depends on the digits), written in a
    fraction of the time 2048 `np.savetxt` calls would take. `source`: "gan" (the DeepFake GAN,
    needs `deepfake-ecg`) or "synthetic" (`synthetic_signals`). Labels are random plausible values.
    `asc=False` writes the store only.
    """
    import pandas as pd

    from ecgtune.data.deepfake import write_asc
    from ecgtune.data.store import StoreWriter

    if source not in ("gan", "synthetic"):
        raise ValueError(f"source must be 'gan' or 'synthetic', got {source!r}")
    root = Path(root)
    unique = max(1, min(unique, n))
    distinct = gan_ecgs(unique, seed) if source == "gan" else synthetic_signals(unique, seed)
    rng = np.random.default_rng(seed)
    targets = np.stack(
        [rng.uniform(50, 90, n), rng.uniform(120, 200, n), rng.uniform(70, 110, n), rng.uniform(350, 450, n)],
        axis=1,
    ).astype(np.float32)
    ids = [f"bench-{i:06d}" for i in range(n)]
    labels = pd.DataFrame({"record_id": ids, "patient_id": ids, "split": "train"})
    labels[["hr", "pr", "qrs", "qt"]] = targets
    store_path = root / "store"
    with StoreWriter(store_path, {"source": "bench", "key": f"bench-{source}-{n}-{unique}-{seed}"}) as w:
        for start in range(0, n, 256):
            idx = np.arange(start, min(start + 256, n))
            w.append(distinct[idx % unique], labels.iloc[idx])
    asc_dir = root / "asc"
    asc_dir.mkdir(parents=True, exist_ok=True)
    paths = [asc_dir / f"{i}.asc" for i in range(n)] if asc else []
    for i, p in enumerate(paths):
        if i < unique:
            write_asc(p, distinct[i])
        else:
            shutil.copyfile(paths[i % unique], p)
    return BenchData(root, store_path, paths, targets, unique)

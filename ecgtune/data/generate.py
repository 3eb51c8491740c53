"""DeepFake ECGs from the original GAN, offline, and a labelled store built from them.

The generator is Pulse2Pulse from the `deepfake-ecg` package (MIT), the
network that produced the published DeepFake set, with the package's own
weights ``checkpoints/g_stat.pt``. Input: uniform noise in [-1, 1], shape
(b, 8, 5000); output: tanh (b, 8, 5000), leads `LEADS` (I, II, V1–V6), 500 Hz.
The published ``.asc`` files hold ``int(out * 6000)``: microvolts, truncated
toward zero (the package's ``.int()``); `generate_ecgs` yields exactly that, as
int16.

Reproducibility: ECG i's noise comes from its own torch generator seeded with
``SeedSequence([seed, i])``, always drawn on the CPU, so ECG i is the same
whatever the batch size, the number generated, or the device. The network's
float kernels do depend on the batch size: torch 2.13 on CPU, batch 1 vs 64,
0.07% of samples differ, by 1 µV (batch 16 vs 64: identical). On a GPU expect
more (cuDNN, TF32 convolutions); not measured.

No MUSE labels come with generated ECGs: `build_generated_store` labels them
with a labeller from `ecgtune.data.labellers` (default neurokit2, MIT).
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgtune.data.labellers import Labeller, get_labeller, package_version
from ecgtune.data.labels import LabelPool, empty_counts, merge_counts
from ecgtune.data.store import (
    ECGStore,
    StoreWriter,
    assign_split_by_hash,
    claim_store_path,
    content_key,
    open_or_build,
)
from ecgtune.progress import Progress
from ecgtune.targets import LEADS, N_SAMPLES

SOURCE = "deepfake-generated"
CHECKPOINT = "checkpoints/g_stat.pt"
# tanh output -> microvolts, as in deepfakeecg.generate() and the published .asc files.
OUTPUT_SCALE_UV = 6000
# Changes whenever the mapping (seed, i) -> noise changes; part of the store key.
NOISE_SCHEME = "torch.Generator(SeedSequence([seed, i])).uniform_(-1, 1) (8, 5000) float32 on CPU, v1"


class GenerateError(ValueError):
    """Bad arguments to the generator or the generated-store builder."""


def checkpoint_path() -> Path:
    """The Pulse2Pulse weights shipped inside the installed `deepfake-ecg` package."""
    import deepfakeecg

    return Path(deepfakeecg.__file__).parent / CHECKPOINT


@lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_sha256() -> str:
    p = checkpoint_path()
    st = p.stat()
    return _sha256(str(p), st.st_size, st.st_mtime_ns)


def generator_info() -> dict[str, str]:
    """What produced the signals: package, version, weights file and its checksum."""
    version = package_version("deepfake-ecg")
    return {
        "name": f"deepfake-ecg {version} Pulse2Pulse {Path(CHECKPOINT).name}",
        "package": "deepfake-ecg",
        "version": version,
        "checkpoint": CHECKPOINT,
        "sha256": checkpoint_sha256(),
        "output_scale_uv": str(OUTPUT_SCALE_UV),
    }


def load_generator(device: str = "cpu"):
    """`deepfakeecg.Generator()` with the package's g_stat.pt weights, in eval mode on `device`.

    Returns a torch.nn.Module mapping noise (b, 8, 5000) in [-1, 1] to tanh (b, 8, 5000).
    """
    import deepfakeecg
    import torch

    with warnings.catch_warnings():
        # Its constructor calls the deprecated nn.init.kaiming_normal (then overwritten by the weights).
        warnings.filterwarnings("ignore", message=r".*kaiming_normal.*", category=FutureWarning)
        model = deepfakeecg.Generator()
    state = torch.load(checkpoint_path(), map_location=device, weights_only=True)["stat_dict"]
    model.load_state_dict(state)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def ecg_seed(seed: int, i: int) -> int:
    """The 64-bit seed of ECG i's noise: independent streams for every (seed, i)."""
    return int(np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint64)[0])


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise GenerateError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def generate_ecgs(
    n: int,
    *,
    seed: int,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
    model=None,
    start: int = 0,
) -> Iterator[np.ndarray]:
    """Yield `n` generated ECGs in batches: int16 (b, 8, 5000) microvolts, leads `LEADS`, 500 Hz.

    Values are ``int(tanh_out * 6000)`` (truncated toward zero), so within ±6000.
    ECG i depends only on (seed, i): see the module docstring. The ECGs are
    numbers start .. start + n - 1 (so a run can be continued). `model` reuses
    a generator from `load_generator` (it must be on `device`).
    """
    import torch

    n = _check_count("n", n, 0)
    seed = _check_count("seed", seed, 0)
    batch_size = _check_count("batch_size", batch_size, 1)
    start = _check_count("start", start, 0)
    device = torch.device(device)
    if model is None:
        model = load_generator(device)
    with Progress(n, "generating", enabled=progress) as bar, torch.inference_mode():
        for first in range(start, start + n, batch_size):
            b = min(batch_size, start + n - first)
            noise = torch.empty(b, len(LEADS), N_SAMPLES)  # (b, 8, 5000), CPU float32
            for j in range(b):
                g = torch.Generator().manual_seed(ecg_seed(seed, first + j))
                noise[j].uniform_(-1.0, 1.0, generator=g)
            out = model(noise.to(device))  # (b, 8, 5000) tanh in [-1, 1]
            uv = (out * OUTPUT_SCALE_UV).int()  # truncation toward zero, like deepfakeecg.generate()
            yield uv.cpu().numpy().astype(np.int16)
            bar.update(b)


def record_ids(seed: int, start: int, stop: int) -> list[str]:
    return [f"gen-{seed}-{i:07d}" for i in range(start, stop)]


def build_generated_store(
    out: str | os.PathLike,
    *,
    n: int,
    seed: int = 0,
    labeller: str | Labeller = "neurokit2",
    workers: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    rebuild: bool = False,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    chunk_size: int = 512,
    progress: bool = True,
) -> tuple[ECGStore, bool]:
    """Generate `n` ECGs, label them, and write a store at `out`; reuse it if the inputs match.

    Generates, labels (in `workers` processes) and writes `chunk_size` ECGs at
    a time, so memory stays bounded (512 ECGs = 41 MB of int16). record_id =
    patient_id = ``gen-{seed}-{i:07d}`` (every GAN ECG is its own "patient");
    splits by `assign_split_by_hash`. The store key covers n, seed, the split
    fractions, the noise scheme, the generator checksum and the labeller (name,
    version, options); batch_size, device and workers are left out: they change
    no label and at most ±1 µV of a signal.

    Returns (store, reused).
    """
    n = _check_count("n", n, 1)
    seed = _check_count("seed", seed, 0)
    batch_size = _check_count("batch_size", batch_size, 1)
    chunk_size = _check_count("chunk_size", chunk_size, 1)
    split_fractions = tuple(float(f) for f in split_fractions)
    if len(split_fractions) != 3:
        raise GenerateError(f"split_fractions must be (train, val, test), got {split_fractions}")
    assign_split_by_hash([], split_fractions)  # validates the fractions before any work
    claim_store_path(out)
    lab = get_labeller(labeller) if isinstance(labeller, str) else labeller
    gen = generator_info()
    options = {"n": n, "seed": seed, "split_fractions": list(split_fractions), "noise": NOISE_SCHEME}
    key = content_key({"source": SOURCE, "generator": gen, "labeller": lab.describe(), **options})

    def build(path: Path) -> ECGStore:
        provenance: dict[str, Any] = {
            "source": SOURCE,
            "generator": gen,
            "label_algorithm": lab.algorithm,
            "labeller": lab.describe(),
            "options": {**options, "batch_size": batch_size, "device": str(device), "chunk_size": chunk_size},
            "key": key,
        }
        counts = empty_counts()
        t_gen = 0.0
        model = load_generator(device)
        with (
            LabelPool(lab, workers) as pool,
            StoreWriter(path, provenance) as writer,
            Progress(n, f"generating+labelling {path.name}", enabled=progress) as bar,
        ):
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                t0 = time.perf_counter()
                batches = generate_ecgs(
                    stop - start,
                    seed=seed,
                    batch_size=batch_size,
                    device=device,
                    progress=False,
                    model=model,
                    start=start,
                )
                signals = np.concatenate(list(batches))
                t_gen += time.perf_counter() - t0
                labels, chunk_counts = pool.label(signals, progress=False)
                counts = merge_counts(counts, chunk_counts)
                ids = record_ids(seed, start, stop)
                table = pd.DataFrame({"record_id": ids, "patient_id": ids})
                table["split"] = assign_split_by_hash(ids, split_fractions)
                table = pd.concat([table, labels], axis=1)
                writer.append(signals, table)
                bar.update(stop - start)
            counts["generate_seconds"] = round(t_gen, 3)
            # StoreWriter copies provenance at construction and writes it on close: counts go in now.
            writer.provenance["counts"] = counts
        return writer.store

    return open_or_build(out, key, build, rebuild=rebuild)

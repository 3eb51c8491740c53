"""The study's input pipeline and training step, rebuilt for side-by-side comparison with ecgtune's:
one `.asc` per ECG read with pandas in a DataLoader, and a plain forward / L1 / backward / AdamW step
timed apart from the wait for its batch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def study_dataset(paths: Sequence[Path], targets: np.ndarray, scale: float = 6000.0):
    """A torch Dataset as the study wrote it (python-scripts-resnet/ECGDataSet.py of
    cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-accelerators): one `.asc`
    per sample read with pandas, to a tensor, float, divided by `scale`, transposed to (8, 5000).

    The study divided by 6000 (the GAN's tanh scale); 1000 gives millivolts as ecgtune's models
    expect. The cost is the same either way.
    """
    import pandas as pd
    import torch
    from torch.utils.data import Dataset

    class StudyAscDataset(Dataset):
        def __init__(self) -> None:
            self.paths = [str(p) for p in paths]
            self.y = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, index: int):
            ecg = pd.read_csv(self.paths[index], header=None, sep=" ")  # (5000, 8) DataFrame
            x = torch.tensor(ecg.values).float()  # int64 -> float32
            x = x / scale
            return x.t(), self.y[index]  # (5000, 8) -> (8, 5000)

    return StudyAscDataset()


def study_loader(dataset, batch_size: int, workers: int, seed: int = 0):
    """The study's DataLoader: shuffled, `workers` worker processes, default collate."""
    import torch
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, generator=g)


# ------------------------------------------------------------------------------------ one training step


def train_step(model, optimizer, x, y) -> float:
    """One step as ecgtune's Trainer takes it, without clipping or schedule: forward, L1 over
    labelled entries, backward, AdamW step. Returns the loss."""
    from ecgtune.train import masked_loss

    pred = model(x)
    loss = masked_loss(pred.float(), y, "l1")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def timed_steps(make_iter, model, optimizer, steps: int, device=None) -> tuple[int, dict[str, float]]:
    """A fresh iterator (its start-up and first batch timed apart), one untimed warm-up step, then `steps`
    training steps, each split into the wait for its batch (next()) and the step itself. With `device`,
    each batch is copied there as the study's loop did; `train_step` reads the loss, so each step ends
    when the device is done with it. Returns (ECGs trained, timings)."""

    def step(x, y) -> None:
        if device is not None:
            x, y = x.to(device), y.to(device)
        train_step(model, optimizer, x, y)

    t0 = time.perf_counter()
    it = make_iter()
    x, y = next(it)  # worker start-up and the first batch
    startup = time.perf_counter() - t0
    step(x, y)  # warm-up, untimed
    wait = compute = 0.0
    n = 0
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = next(it)
        t1 = time.perf_counter()
        step(x, y)
        t2 = time.perf_counter()
        wait += t1 - t0
        compute += t2 - t1
        n += len(x)
    del it  # shuts DataLoader workers down before another side runs
    return n, {
        "wait_s": wait,
        "compute_s": compute,
        "startup_s": startup,
        "wait_share": wait / (wait + compute) if steps else 0.0,
        "wait_ms_per_step": 1000 * wait / max(steps, 1),
        "compute_ms_per_step": 1000 * compute / max(steps, 1),
    }

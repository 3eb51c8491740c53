"""Labelling many ECGs: a labeller (`ecgtune.data.labellers`) run over (n, 8, 5000) ECGs in a pool
of processes, values outside `TARGETS[t].plausible` dropped (`ecgtune.data.checks`), both kinds of
loss counted.

`label_ecgs(signals, "neurokit2")` labels once; `LabelPool` keeps the workers for several calls.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import pandas as pd

from ecgtune.data.checks import drop_implausible
from ecgtune.data.labellers import LABELLERS, LabelError, Labeller, get_labeller
from ecgtune.targets import LEADS, MICROVOLTS_PER_MILLIVOLT, N_SAMPLES, TARGET_NAMES

# No surface ECG reaches 50 mV: a float array beyond it is microvolts passed as millivolts.
MAX_PLAUSIBLE_MV = 50.0


def empty_counts() -> dict[str, Any]:
    """Counts of one labelling run; `merge_counts` adds runs (chunks) together.

    n: ECGs seen; labelled: ECGs with all four labels kept; failed[t]: the
    algorithm found nothing (NaN); dropped[t]: a value outside
    `TARGETS[t].plausible`, set to NaN; errors: ECGs on which the labeller
    raised (all four NaN, counted in failed too), with up to 3 examples.
    """
    return {
        "n": 0,
        "labelled": 0,
        "failed": dict.fromkeys(TARGET_NAMES, 0),
        "dropped": dict.fromkeys(TARGET_NAMES, 0),
        "errors": 0,
        "error_examples": [],
        "seconds": 0.0,
    }


def merge_counts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": a["n"] + b["n"],
        "labelled": a["labelled"] + b["labelled"],
        "failed": {t: a["failed"][t] + b["failed"][t] for t in TARGET_NAMES},
        "dropped": {t: a["dropped"][t] + b["dropped"][t] for t in TARGET_NAMES},
        "errors": a["errors"] + b["errors"],
        "error_examples": (a["error_examples"] + b["error_examples"])[:3],
        "seconds": round(a["seconds"] + b["seconds"], 3),
    }


def to_millivolts(signals: np.ndarray) -> np.ndarray:
    """int16 (or any integer) µV -> float64 mV; float input is taken as mV already."""
    signals = np.asarray(signals)
    if np.issubdtype(signals.dtype, np.integer):
        return signals.astype(np.float64) / MICROVOLTS_PER_MILLIVOLT
    if np.issubdtype(signals.dtype, np.floating):
        x = signals.astype(np.float64)
        peak = float(np.nanmax(np.abs(x))) if x.size and not np.all(np.isnan(x)) else 0.0
        if peak > MAX_PLAUSIBLE_MV:
            raise LabelError(
                f"float signals reach {peak:.0f} mV; pass float millivolts or integer microvolts"
            )
        return x
    raise LabelError(f"signals must be integer µV or float mV, got dtype {signals.dtype}")


def _check_batch(signals: np.ndarray) -> np.ndarray:
    signals = np.asarray(signals) if not isinstance(signals, np.ndarray) else signals
    if signals.ndim != 3 or signals.shape[1:] != (len(LEADS), N_SAMPLES):
        raise LabelError(
            f"signals have shape {signals.shape}; expected (n, {len(LEADS)}, {N_SAMPLES}) "
            f"int16 µV or float mV, leads {LEADS}"
        )
    return signals


def _raw_labels(labeller: Labeller, chunk: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Run `labeller` on each ECG of a chunk: (k, 4) float array (NaN = not found), error messages."""
    x = to_millivolts(chunk)
    values = np.full((len(x), len(TARGET_NAMES)), np.nan)
    errors: list[str] = []
    for i, ecg in enumerate(x):
        try:
            labels = labeller.label_one(ecg)
        except Exception as e:  # one odd ECG must not sink a 100k-ECG run; it is counted and shown
            errors.append(f"{type(e).__name__}: {e}")
            continue
        if set(labels) != set(TARGET_NAMES):
            raise LabelError(
                f"labeller {labeller.name!r} returned keys {sorted(labels)}; expected {list(TARGET_NAMES)}"
            )
        values[i] = [float(labels[t]) for t in TARGET_NAMES]
    return values, errors


def _apply_plausible(values: np.ndarray, errors: list[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(k, 4) raw values -> labels with NaN for "failed" (not found, incl. ±inf) and "dropped"
    (implausible) values, and their counts."""
    counts = empty_counts()
    counts["n"] = len(values)
    counts["errors"] = len(errors)
    counts["error_examples"] = errors[:3]
    missing = ~np.isfinite(values)  # (k, 4)
    labels = pd.DataFrame(np.where(missing, np.nan, values), columns=list(TARGET_NAMES))
    dropped = drop_implausible(labels)
    for j, t in enumerate(TARGET_NAMES):
        counts["failed"][t] = int(missing[:, j].sum())
        counts["dropped"][t] = int(dropped[t].sum())
    counts["labelled"] = int(labels.notna().all(axis=1).sum())
    return labels, counts


# Worker-process state: the labeller, sent once per worker by the pool initializer.
_WORKER_LABELLER: Labeller | None = None


def _init_worker(labeller: Labeller) -> None:
    global _WORKER_LABELLER
    _WORKER_LABELLER = labeller


def _worker_labels(chunk: np.ndarray) -> tuple[np.ndarray, list[str]]:
    if _WORKER_LABELLER is None:
        raise RuntimeError("label worker used without _init_worker")
    return _raw_labels(_WORKER_LABELLER, chunk)


def _mp_context() -> multiprocessing.context.BaseContext:
    # forkserver: no fork of a parent that runs torch threads (deadlock-prone), and
    # neurokit2's ~3 s import is paid once per Python process, not once per worker.
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["ecgtune.data.labels", "neurokit2"])
        return ctx
    return multiprocessing.get_context("spawn")


class LabelPool:
    """A labeller and (for workers > 1) a process pool, reusable across calls.

        with LabelPool("neurokit2", workers=4) as pool:
            labels, counts = pool.label(signals)

    workers=None uses os.cpu_count(); workers=1 labels in this process.
    Workers start by forkserver (spawn where there is none), never by a bare
    fork of a process that may be running torch threads; so, as with any such
    pool, a script must call this under ``if __name__ == "__main__":``.
    """

    def __init__(
        self, labeller: str | Labeller = "neurokit2", workers: int | None = None, chunk_size: int = 8
    ):
        self.labeller = get_labeller(labeller) if isinstance(labeller, str) else labeller
        if not isinstance(self.labeller, Labeller):
            raise LabelError(
                f"labeller must be a name in {sorted(LABELLERS)} or a Labeller, got {labeller!r}"
            )
        self.workers = (os.cpu_count() or 1) if workers is None else int(workers)
        if self.workers < 1:
            raise LabelError(f"workers must be >= 1 (or None for all cores), got {workers}")
        if chunk_size < 1:
            raise LabelError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self._executor: ProcessPoolExecutor | None = None
        if self.workers > 1:
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=_mp_context(), initializer=_init_worker, initargs=(self.labeller,)
            )

    def label(self, signals: np.ndarray, *, progress: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Label (n, 8, 5000) ECGs, int16 µV or float mV.

        Returns (labels, counts): labels has columns hr, pr, qrs, qt (float,
        NaN = missing or implausible), row i = ECG i; counts as `empty_counts`.
        """
        from ecgtune.progress import Progress

        signals = _check_batch(signals)
        n = len(signals)
        t0 = time.perf_counter()
        starts = range(0, n, self.chunk_size)
        results: dict[int, tuple[np.ndarray, list[str]]] = {}
        with Progress(n, f"labelling ({self.labeller.name})", enabled=progress) as bar:
            if self._executor is None:
                for s in starts:
                    results[s] = _raw_labels(self.labeller, signals[s : s + self.chunk_size])
                    bar.update(len(results[s][0]))
            else:
                # Bounded in flight: a 100k-ECG memmap is never copied into the queue at once.
                pending: dict[Future, int] = {}
                it = iter(starts)
                max_pending = 4 * self.workers
                while True:
                    while len(pending) < max_pending:
                        s = next(it, None)
                        if s is None:
                            break
                        chunk = np.ascontiguousarray(signals[s : s + self.chunk_size])
                        pending[self._executor.submit(_worker_labels, chunk)] = s
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        s = pending.pop(f)
                        try:
                            results[s] = f.result()
                        except BrokenProcessPool as e:
                            raise BrokenProcessPool(
                                f"a labelling worker died ({e}). Workers start by forkserver/spawn: a "
                                "script that labels with workers > 1 must do so under "
                                "`if __name__ == '__main__':` (or use workers=1)"
                            ) from e
                        bar.update(len(results[s][0]))
        values = np.concatenate([results[s][0] for s in starts]) if n else np.zeros((0, len(TARGET_NAMES)))
        errors = [e for s in starts for e in results[s][1]]
        labels, counts = _apply_plausible(values, errors)
        counts["seconds"] = round(time.perf_counter() - t0, 3)
        return labels, counts

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> LabelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def label_ecgs(
    signals: np.ndarray,
    labeller: str | Labeller = "neurokit2",
    workers: int | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Label (n, 8, 5000) ECGs (int16 µV or float mV) with HR, PR, QRS, QT.

    Parallel over `workers` processes (None: os.cpu_count(); 1: in this
    process). Returns (labels, counts): labels has float columns hr, pr, qrs,
    qt, row i = ECG i, NaN where the labeller found nothing ("failed") or found
    a value outside `TARGETS[t].plausible` ("dropped"); counts as `empty_counts`.
    """
    with LabelPool(labeller, workers) as pool:
        return pool.label(signals, progress=progress)

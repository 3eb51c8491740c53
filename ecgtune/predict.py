"""Run a trained model on ECG records: `ecgtune predict MODEL_DIR RECORD...`.

Any WFDB record (any sampling rate, resampled to 500 Hz; leads I, II, V1–V6
found by name, case-insensitively, nothing derived), read by the converter's
reader (`ecgtune.data.wfdb_record`), or a DeepFake `.asc` file. Records longer
than 10 s are cut into consecutive 10 s windows and the per-window predictions
are aggregated by their median.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgtune.data.deepfake import read_asc
from ecgtune.data.wfdb_record import read_record, record_base
from ecgtune.final import load_model, predict_signals
from ecgtune.targets import MICROVOLTS_PER_MILLIVOLT, N_SAMPLES, TARGETS


@dataclass
class RecordPrediction:
    record: str
    windows: int
    values: dict[str, float]  # target -> median over windows, in bpm / ms


def read_windows(path: str | Path) -> np.ndarray:
    """(n_windows, 8, 5000) float32 mV from a WFDB record (path without extension) or an `.asc` file.

    A WFDB record is read by `ecgtune.data.wfdb_record.read_record`, the converter's reader, whole:
    the same rules and the same samples as in training, and every 10 s window it yields.
    """
    path = Path(path)
    if path.suffix == ".asc":
        return read_asc(path)[None].astype(np.float32) / MICROVOLTS_PER_MILLIVOLT
    base = record_base(path)
    if not base.with_name(base.name + ".hea").is_file():
        raise FileNotFoundError(
            f"{base}.hea: no WFDB header (give a record path without extension, or an .asc)"
        )
    signal, _ = read_record(base, whole=True)  # (8, n) mV at 500 Hz, n >= 5000
    n_windows = signal.shape[1] // N_SAMPLES
    # (8, n_windows * 5000) -> (n_windows, 8, 5000)
    return np.ascontiguousarray(
        signal[:, : n_windows * N_SAMPLES].reshape(len(signal), n_windows, N_SAMPLES).transpose(1, 0, 2)
    )


def predict_records(model_dir: str | Path, records: list[str]) -> list[RecordPrediction]:
    model, meta = load_model(model_dir)
    out = []
    for record in records:
        windows = read_windows(record)
        pred = predict_signals(model, meta, windows)  # (n_windows, k)
        values = {t: float(np.median(pred[:, j])) for j, t in enumerate(meta["targets"])}
        out.append(RecordPrediction(str(record), len(windows), values))
    return out


def format_predictions(preds: list[RecordPrediction], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps([{"record": p.record, "windows": p.windows, **p.values} for p in preds], indent=2)
    targets = list(preds[0].values) if preds else []
    if fmt == "csv":
        rows = ["record,windows," + ",".join(f"{t}_{TARGETS[t].unit}" for t in targets)]
        rows += [f"{p.record},{p.windows}," + ",".join(f"{p.values[t]:.1f}" for t in targets) for p in preds]
        return "\n".join(rows)
    width = max([len("record"), *(len(p.record) for p in preds)])  # a cut path names another record
    head = f"{'record':<{width}} {'windows':>7} " + " ".join(
        f"{TARGETS[t].title + ' ' + TARGETS[t].unit:>9}" for t in targets
    )
    rows = [head] + [
        f"{p.record:<{width}} {p.windows:>7} " + " ".join(f"{p.values[t]:>9.1f}" for t in targets)
        for p in preds
    ]
    return "\n".join(rows)

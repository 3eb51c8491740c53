"""Run a trained model on ECG records: `ecgtune predict MODEL_DIR RECORD...`.

Any WFDB record (any sampling rate, resampled to 500 Hz; leads I, II, V1–V6
found by name, case-insensitively, nothing derived) or a DeepFake `.asc`
file. Records longer than 10 s are cut into consecutive 10 s windows and the
per-window predictions are aggregated by their median.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb
from scipy.signal import resample_poly

from ecgtune.data.deepfake import read_asc
from ecgtune.data.errors import RecordFormatError
from ecgtune.data.ptbxl import UNIT_TO_MV, lead_channels
from ecgtune.final import load_model, predict
from ecgtune.targets import MICROVOLTS_PER_MILLIVOLT, N_SAMPLES, SAMPLING_RATE_HZ, TARGETS


@dataclass
class RecordPrediction:
    record: str
    windows: int
    values: dict[str, float]  # target -> median over windows, in bpm / ms


def read_windows(path: str | Path) -> np.ndarray:
    """(n_windows, 8, 5000) float32 mV from a WFDB record (path without extension) or an `.asc` file."""
    path = Path(path)
    if path.suffix == ".asc":
        return read_asc(path)[None].astype(np.float32) / MICROVOLTS_PER_MILLIVOLT
    base = path.with_suffix("") if path.suffix in (".hea", ".dat") else path
    if not base.with_name(base.name + ".hea").is_file():
        raise FileNotFoundError(
            f"{base}.hea: no WFDB header (give a record path without extension, or an .asc)"
        )
    try:
        header = wfdb.rdheader(str(base))
    except Exception as e:
        raise RecordFormatError(f"{base}.hea: unreadable WFDB header ({e})") from None
    channels = lead_channels(header.sig_name or [], base)  # refuse before reading any signal data
    try:
        rec = wfdb.rdrecord(str(base), channels=channels)
    except Exception as e:
        raise RecordFormatError(f"{base}: unreadable signal data ({type(e).__name__}: {e})") from None
    factors = [UNIT_TO_MV.get(str(u or "mV").strip().lower()) for u in rec.units]
    if None in factors:
        raise RecordFormatError(f"{base}.hea: units {rec.units}; expected mV, uV or V")
    signal = rec.p_signal * np.asarray(factors)  # (n, 8) mV
    if np.isnan(signal).any():
        raise RecordFormatError(f"{base}: invalid (NaN) samples; expected a complete record")
    ratio = Fraction(SAMPLING_RATE_HZ) / Fraction(float(rec.fs)).limit_denominator(10_000)
    if ratio != 1:
        signal = resample_poly(signal, ratio.numerator, ratio.denominator, axis=0, padtype="line")
    n_windows = len(signal) // N_SAMPLES
    if n_windows == 0:
        raise RecordFormatError(
            f"{base}: {len(signal) / SAMPLING_RATE_HZ:.1f} s long; expected at least 10 s"
        )
    # (n_windows * 5000, 8) -> (n_windows, 8, 5000)
    return np.ascontiguousarray(
        signal[: n_windows * N_SAMPLES].reshape(n_windows, N_SAMPLES, -1).transpose(0, 2, 1), dtype=np.float32
    )


def predict_records(model_dir: str | Path, records: list[str]) -> list[RecordPrediction]:
    model, meta = load_model(model_dir)
    out = []
    for record in records:
        windows = read_windows(record)
        pred = predict(model, meta, windows)  # (n_windows, k)
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
    head = f"{'record':<40} {'windows':>7} " + " ".join(
        f"{TARGETS[t].title + ' ' + TARGETS[t].unit:>9}" for t in targets
    )
    rows = [head] + [
        f"{p.record[-40:]:<40} {p.windows:>7} " + " ".join(f"{p.values[t]:>9.1f}" for t in targets)
        for p in preds
    ]
    return "\n".join(rows)

"""The one WFDB record reader: conversion (`ecgtune.data.ptbxl`) and prediction (`ecgtune.predict`)
both read records through `read_record`, so a model sees at inference what it saw in training.

A record is `<base>.hea` plus the signal file(s) it names. Its header is read strictly first
(`ecgtune.data.wfdb_header`), then wfdb-python reads the samples. What comes out: ecgtune's 8
leads (`LEADS`: I, II, V1-V6) chosen by signal name, in millivolts, at 500 Hz.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import wfdb
from scipy.signal import resample_poly

from ecgtune.data.checks import check_no_flat_lead
from ecgtune.data.errors import RecordFormatError
from ecgtune.data.wfdb_header import read_header
from ecgtune.targets import LEADS, N_SAMPLES, SAMPLING_RATE_HZ

# Physical units WFDB headers use for ECG leads, as factors to millivolts.
UNIT_TO_MV: dict[str, float] = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
# Read whole records up to this many times the needed length (so checksums can be
# verified); longer ones are read only as far as needed.
FULL_READ_FACTOR = 4
# Extra input kept past the 10 s window when resampling, so the polyphase filter's
# edge transient falls outside the samples kept.
RESAMPLE_MARGIN_S = 0.2


def record_base(record_path: str | os.PathLike) -> Path:
    """The record path without extension (a `.hea` or `.dat` suffix is dropped)."""
    p = Path(record_path)
    return p.with_suffix("") if p.suffix in (".hea", ".dat") else p


def _input_samples(fs: float) -> tuple[Fraction, int, int]:
    """(resampling ratio 500/fs, input samples covering 10 s, input samples kept incl. margin)."""
    ratio = Fraction(SAMPLING_RATE_HZ) / Fraction(fs).limit_denominator(10_000)
    n_need = math.ceil(N_SAMPLES / ratio)
    return ratio, n_need, n_need + (math.ceil(RESAMPLE_MARGIN_S * fs) if ratio != 1 else 0)


def lead_channels(names: Sequence[str], where: str | os.PathLike) -> list[int]:
    """Indices of ecgtune's 8 leads (`LEADS` order) among a record's signal names, matched
    case-insensitively; nothing is derived. Raises RecordFormatError naming the missing leads."""
    by_name: dict[str, int] = {}
    for i, n in enumerate(names):
        key = str(n).strip().upper()
        if key in by_name and key in (lead.upper() for lead in LEADS):
            raise RecordFormatError(
                f"{where}: lead {n!r} appears twice (signals {by_name[key] + 1} and {i + 1}); "
                "expected each lead once — which one is the ECG would be a guess",
                reason="duplicate_lead",
            )
        by_name.setdefault(key, i)
    missing = [lead for lead in LEADS if lead.upper() not in by_name]
    if missing:
        raise RecordFormatError(
            f"{where}: missing lead(s) {missing}; the record has {list(names)}; ecgtune needs {list(LEADS)} "
            "(matched by name, case-insensitively)"
        )
    return [by_name[lead.upper()] for lead in LEADS]


def read_record(record_path: str | os.PathLike, *, whole: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one WFDB record as ecgtune's 8 leads at 500 Hz: its first 10 s, or with `whole` all of it.

    `record_path`: the record without extension (`.../00001_hr`; a `.hea` or
    `.dat` suffix is tolerated).

    Returns (signals, info). signals: float32 millivolts, shape (8, 5000) —
    with `whole`, (8, n) for the whole record resampled (n >= 5000) — leads in
    `LEADS` order (I, II, V1-V6) chosen by signal name, case-insensitively
    (PTB-XL writes I, AVR, V1; PTB writes i, avr, v1), at 500 Hz. info: record,
    fs, sig_len, units, sig_name, resampled_from_hz (None if already 500 Hz),
    truncated_from_s (the record's length if longer than 10 s and cut, else
    None), checksum_verified.

    * Another sampling rate is resampled to 500 Hz with
      scipy.signal.resample_poly (polyphase FIR, Kaiser window, linear edge
      padding): exact rational ratio, anti-aliased, no FFT wrap-around; 0.2 s
      past the window is kept as filter run-out when the record has it.
    * A record longer than 10 s contributes its first 10 s (all of it with
      `whole`); a shorter one is refused.
    * Units mV, uV or V are converted to mV.
    * Header checksums of the 8 leads are verified whenever the whole record
      is read (always with `whole`; else records up to 4 x 10 s, longer ones
      are read only as far as needed).
    * Every complete 10 s window returned must pass `check_no_flat_lead`.

    Raises FileNotFoundError if the header or signal file is missing, and
    RecordFormatError (a ValueError) naming the file for an unreadable
    header or signal file, fewer samples than the header declares, a checksum
    mismatch, missing leads (naming them and the leads present), a record
    shorter than 10 s, unknown units, NaN (invalid) samples in what is
    returned, or a flat lead.
    """
    base = record_base(record_path)
    hea = base.with_name(base.name + ".hea")
    if not hea.is_file():
        raise FileNotFoundError(errno.ENOENT, "WFDB header not found", str(hea))
    header = read_header(hea)  # refuses what wfdb-python would fill in or ignore
    sampto = None  # whole record, unless the record line says it is long
    if header.sig_len is not None and not whole:
        _, n_need, n_keep = _input_samples(header.fs)
        if header.sig_len > FULL_READ_FACTOR * n_need:
            sampto = n_keep
    try:
        rec = wfdb.rdrecord(str(base), sampto=sampto, physical=False, return_res=64)
    except FileNotFoundError as e:
        raise FileNotFoundError(errno.ENOENT, "WFDB signal file not found", e.filename or str(base)) from None
    except Exception as e:  # wfdb fails in many ways on bad input (ValueError, IndexError, TypeError...)
        raise _unreadable(base, hea, e) from None

    names = list(rec.sig_name or [])
    channels = lead_channels(names, base)
    if rec.fs is None or not float(rec.fs) > 0:
        raise RecordFormatError(f"{hea}: sampling frequency {rec.fs!r}; expected a positive number of Hz")
    fs = float(rec.fs)
    ratio, n_need, n_keep = _input_samples(fs)
    sig_len = rec.sig_len
    if sig_len is not None and sig_len < n_need:
        raise RecordFormatError(
            f"{base}: {sig_len} samples at {fs:g} Hz = {sig_len / fs:.2f} s; expected at least "
            f"{N_SAMPLES / SAMPLING_RATE_HZ:g} s ({n_need} samples)"
        )
    d = rec.d_signal
    n_expected = sampto if sampto is not None else sig_len
    if n_expected is None and d is not None and d.ndim == 2:  # header without a length: the file decides
        n_expected = d.shape[0]
        if n_expected < n_need:
            raise RecordFormatError(
                f"{base}: {n_expected} samples at {fs:g} Hz; expected at least {n_need} (10 s)"
            )
    if d is None or d.ndim != 2 or d.shape[1] != len(names) or d.shape[0] != n_expected:
        raise RecordFormatError(
            f"{base}: signal data has shape {None if d is None else d.shape}; header {hea.name} "
            f"declares {n_expected} samples x {len(names)} signals"
        )
    d = d[:, channels]  # (n, 8)
    checksum_verified = False
    checksums = [rec.checksum[c] for c in channels] if rec.checksum else None
    if sampto is None and checksums and all(c is not None for c in checksums):
        bad = [
            LEADS[j] for j, (c, h) in enumerate(zip(d.sum(axis=0), checksums, strict=True)) if (c - h) % 65536
        ]
        if bad:
            raise RecordFormatError(
                f"{base}: checksum mismatch in lead(s) {bad}: the signal file does not hold what header "
                f"{hea.name} describes (corrupt, or from another record)"
            )
        checksum_verified = True

    factors = []
    for lead, c in zip(LEADS, channels, strict=True):
        unit = rec.units[c] if rec.units else "mV"
        factor = UNIT_TO_MV.get(str(unit or "mV").strip().lower())
        if factor is None:
            raise RecordFormatError(f"{hea}: lead {lead} has units {unit!r}; expected one of mV, uV, V")
        factors.append(factor)
    # wfdb's digital -> physical conversion maps each format's invalid-sample marker to NaN.
    p = rec.dac(return_res=64)[: None if whole else n_keep, channels]  # (n, 8) physical units
    nan = np.isnan(p)
    if nan.any():
        counts = {LEADS[j]: int(c) for j, c in enumerate(nan.sum(axis=0)) if c}
        raise RecordFormatError(
            f"{base}: invalid (NaN) samples in lead(s) {counts} of "
            f"{'the record' if whole else 'the first 10 s'}; expected a complete record"
        )
    p = p * np.asarray(factors)  # mV
    if ratio != 1:
        # (n_in, 8) -> (n_in * ratio, 8); the first 5000 output samples cover the first 10 s.
        p = resample_poly(p, ratio.numerator, ratio.denominator, axis=0, padtype="line")
    signals = np.ascontiguousarray((p if whole else p[:N_SAMPLES]).T, dtype=np.float32)  # (8, n) mV
    for k in range(signals.shape[1] // N_SAMPLES):  # each 10 s a model would see
        where = base if k == 0 else f"{base} ({10 * k}-{10 * k + 10} s)"
        check_no_flat_lead(signals[:, k * N_SAMPLES : (k + 1) * N_SAMPLES], where)
    total = sig_len if sig_len is not None else rec.d_signal.shape[0]
    info = {
        "record": str(base),
        "fs": fs,
        "sig_len": int(total),
        "units": [rec.units[c] for c in channels] if rec.units else ["mV"] * len(LEADS),
        "sig_name": names,
        "resampled_from_hz": None if ratio == 1 else fs,
        "truncated_from_s": round(total / fs, 3) if total > n_need and not whole else None,
        "checksum_verified": checksum_verified,
    }
    return signals, info


def _unreadable(base: Path, hea: Path, error: Exception) -> RecordFormatError:
    """A RecordFormatError naming the header if it is what fails to parse, else the signal file."""
    what = f"{type(error).__name__}: {error}"
    try:
        header = wfdb.rdheader(str(base))
    except Exception:
        return RecordFormatError(
            f"{hea}: unreadable WFDB header ({what}); expected a record line "
            "'<name> <n_sig> <fs> <n_samples>' and one line per signal"
        )
    described = len(header.sig_name or [])
    if header.n_sig != described:
        return RecordFormatError(
            f"{hea}: unreadable WFDB header: it declares {header.n_sig} signals but describes {described} "
            f"({what})"
        )
    files = sorted({str(base.parent / f) for f in (header.file_name or [])}) or [str(base)]
    return RecordFormatError(
        f"{files[0] if len(files) == 1 else files}: unreadable signal data ({what}); header {hea.name} "
        f"declares {header.sig_len} samples x {header.n_sig} signals (truncated or corrupt file?)"
    )

"""Labellers: HR, PR, QRS and QT measured from one ECG's signal, for ECGs that have no MUSE labels.

A labeller is a small object (`Labeller`) that turns one ECG, float millivolts
(8, 5000) in lead order `ecgtune.targets.LEADS` at 500 Hz, into
``{"hr": bpm, "pr": ms, "qrs": ms, "qt": ms}``, NaN where it finds nothing
(missing, never zero). `ecgtune.data.labels` runs one over many ECGs in
parallel and drops implausible values.

Labellers (`LABELLERS`, `get_labeller`):

- ``"neurokit2"`` (default, MIT): see `NeuroKit2Labeller`. Why its recipe is
  what it is (delineator, aggregation over leads; measured on 100 GAN ECGs
  against ecgdeli): docs/benchmarks.md, "Labelling recipe".
- ``"ecgdeli"`` (optional, **GPL-3.0-or-later**): the KIT-IBT ECGdeli port behind
  PTB-XL+'s ``ecgdeli_features.csv``. Imported only when picked; install it with
  ``pip install 'ecgtune[ecgdeli]'``, which makes the combined work GPL
  (ecgtune itself stays MIT).

The PR trap: the clinical PR interval is QRS onset − P onset. R peak − P onset
(ecgdeli's ``Intervals.pr``) is ~55 ms longer; both labellers here report the
clinical one.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ecgtune.targets import LEADS, N_SAMPLES, SAMPLING_RATE_HZ, TARGET_NAMES

FS = SAMPLING_RATE_HZ
MS_PER_SAMPLE = 1000.0 / FS


class LabelError(ValueError):
    """Bad input to a labeller, or a labeller that broke its contract."""


class LabellerNotInstalledError(ImportError):
    """The chosen labeller needs an optional package that is not installed."""


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not-installed"


class Labeller(ABC):
    """Measures HR (bpm), PR, QRS, QT (ms) on one ECG.

    `label_one` takes float millivolts (8, 5000), leads `LEADS`, 500 Hz, and
    returns exactly the keys `TARGET_NAMES`, NaN where nothing was found.
    Instances must pickle (they are sent to worker processes).
    """

    name: ClassVar[str]

    @property
    @abstractmethod
    def version(self) -> str:
        """Version of the package doing the measuring."""

    @property
    def options(self) -> dict[str, Any]:
        """The labeller's settings; part of a store's content key."""
        return {}

    @property
    def algorithm(self) -> str:
        """One human-readable line: name, version, method."""
        return f"{self.name} {self.version}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "algorithm": self.algorithm,
            "options": self.options,
        }

    @abstractmethod
    def label_one(self, ecg_mv: np.ndarray) -> dict[str, float]:
        """(8, 5000) float mV -> {"hr", "pr", "qrs", "qt"}; NaN = not found."""


def _check_one(ecg_mv: np.ndarray) -> np.ndarray:
    x = np.asarray(ecg_mv, dtype=np.float64)
    if x.shape != (len(LEADS), N_SAMPLES):
        raise LabelError(
            f"one ECG must be ({len(LEADS)}, {N_SAMPLES}) float mV, leads {LEADS}; got {x.shape}"
        )
    return x


def _nan_labels() -> dict[str, float]:
    return dict.fromkeys(TARGET_NAMES, float("nan"))


def _median_or_nan(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


# ---------------------------------------------------------------------------------------------
# neurokit2 (MIT): the default
# ---------------------------------------------------------------------------------------------

# Fiducials read from ecg_delineate; "R" onset/offset are neurokit2's names for QRS onset/offset.
_P_ON, _QRS_ON, _QRS_OFF, _T_OFF = "ECG_P_Onsets", "ECG_R_Onsets", "ECG_R_Offsets", "ECG_T_Offsets"
_DELINEATIONS = ("prominence", "dwt")
# Bump when the code of NeuroKit2Labeller changes its output: it is part of every store key.
RECIPE_VERSION = 1


def _beat_correlation(x: np.ndarray, rpeaks: np.ndarray) -> float:
    """Median correlation of each beat with the mean of the *other* beats (leave-one-out).

    A quality gate that needs no threshold on amplitude: real (and GAN) beats
    repeat (GAN ECGs: >= 0.86 on every lead of 320 measured, median 0.99), the
    "beats" a detector finds in noise do not (<= 0.31 on 20 white-noise leads).
    Window: 200 ms before to 400 ms after the R peak.
    """
    before, after = int(0.2 * FS), int(0.4 * FS)
    r = [p for p in rpeaks if p - before >= 0 and p + after <= len(x)]
    if len(r) < 3:
        return float("nan")
    beats = np.stack([x[p - before : p + after] for p in r])  # (k, 300)
    others = (beats.sum(axis=0) - beats) / (len(beats) - 1)  # (k, 300)
    b = beats - beats.mean(axis=1, keepdims=True)
    o = others - others.mean(axis=1, keepdims=True)
    denom = np.sqrt((b * b).sum(axis=1) * (o * o).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (b * o).sum(axis=1) / denom
    return _median_or_nan(corr)


def _aligned(values: Sequence[float], n: int) -> np.ndarray:
    """One fiducial list from ecg_delineate, as n floats aligned to the R peaks.

    neurokit2 0.2.13 drops fiducials at sample 0 from its output (it keeps only
    ``x > 0``), which can only happen at the first beat: re-insert them as NaN
    at the front so beat i stays beat i.
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) < n:
        v = np.concatenate([np.full(n - len(v), np.nan), v])
    return v[:n]


class NeuroKit2Labeller(Labeller):
    """HR, PR, QRS, QT from neurokit2 (MIT), global over leads, median over beats.

    Recipe (docs/benchmarks.md, "Labelling recipe", has the comparison that chose it):

    1. Each lead: ``ecg_clean`` (0.5 Hz high-pass, 50 Hz moving average) and
       ``ecg_peaks`` (neurokit's own QRS detector). A lead is *usable* if it has
       >= 3 R peaks whose beats repeat (`_beat_correlation` >= min_beat_correlation):
       flat, disconnected and noise-only leads drop out.
    2. HR = median over usable leads of 60 / median RR. No usable lead: all four NaN.
    3. One set of R peaks (the first usable lead in `reference_leads` whose HR is
       within 5% of the HR) is delineated on every usable lead with
       ``ecg_delineate(method=delineation)``, so beat i is the same beat in every lead.
    4. Per beat: QRS onset and P onset = the `onset_percentile` over leads; QRS
       offset and T offset = the (100 - onset_percentile) percentile. PR = QRS
       onset − P onset (the clinical PR, not R peak − P onset), QRS = QRS offset −
       QRS onset, QT = T offset − QRS onset; non-positive per-beat values are
       discarded; each interval is the median over beats.

    Limits: the prominence delineator places QRS onset/offset at the lowest
    point within ±50 ms of the R peak (its ``max_r_basepoint_interval`` = 100 ms),
    so one lead's QRS cannot exceed ~100 ms and the global one rarely does (max
    99 ms on 100 GAN ECGs): bundle-branch-block widths (> 120 ms) come out short.
    It looks for T within half an RR interval after R, so above ~120 bpm QT is
    often missing (NaN, counted as failed; ECGSYN at 130 and 160 bpm).
    Raising that window to 140 ms moves the GAN median from 84 to 100 ms and
    makes labels noisier (half-MAD 5 -> 7.5 ms), i.e. the bases then wander into
    the PR and ST segments; the default is kept. QRS here runs ~30 ms below
    ecgdeli's on the same ECGs (84 vs 116 ms) and ~6 ms below the MUSE mean.
    """

    name = "neurokit2"

    def __init__(
        self,
        *,
        delineation: str = "prominence",
        onset_percentile: float = 25.0,
        min_beat_correlation: float = 0.6,
        reference_leads: Sequence[str] = ("II", "V5", "I", "V6", "V4", "V3", "V2", "V1"),
    ):
        if delineation not in _DELINEATIONS:
            raise LabelError(f"delineation {delineation!r} not supported; allowed: {list(_DELINEATIONS)}")
        if not 0.0 <= onset_percentile <= 50.0:
            raise LabelError(
                f"onset_percentile must be in [0, 50] (0 = earliest onset), got {onset_percentile}"
            )
        if not -1.0 <= min_beat_correlation <= 1.0:
            raise LabelError(f"min_beat_correlation must be in [-1, 1], got {min_beat_correlation}")
        unknown = [lead for lead in reference_leads if lead not in LEADS]
        if unknown or not reference_leads:
            raise LabelError(
                f"reference_leads {list(reference_leads)}: unknown {unknown}; leads are {list(LEADS)}"
            )
        self.delineation = delineation
        self.onset_percentile = float(onset_percentile)
        self.min_beat_correlation = float(min_beat_correlation)
        self.reference_leads = tuple(reference_leads)

    @property
    def version(self) -> str:
        return package_version("neurokit2")

    @property
    def options(self) -> dict[str, Any]:
        return {
            "recipe": RECIPE_VERSION,
            "clean": "ecg_clean(method='neurokit')",
            "peaks": "ecg_peaks(method='neurokit')",
            "delineation": self.delineation,
            "onset_percentile": self.onset_percentile,
            "min_beat_correlation": self.min_beat_correlation,
            "reference_leads": list(self.reference_leads),
        }

    @property
    def algorithm(self) -> str:
        p = self.onset_percentile
        return (
            f"neurokit2 {self.version} neurokit peaks + {self.delineation} delineation; "
            f"per beat p{p:g} onsets / p{100 - p:g} offsets over leads; median over beats"
        )

    def label_one(self, ecg_mv: np.ndarray) -> dict[str, float]:
        x = _check_one(ecg_mv)
        # neurokit2 warns on every short or odd signal; the NaN it leaves is the message.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return self._label(x)

    def _label(self, x: np.ndarray) -> dict[str, float]:
        import neurokit2 as nk

        out = _nan_labels()
        clean: dict[int, np.ndarray] = {}
        peaks: dict[int, np.ndarray] = {}
        for lead in range(len(LEADS)):
            if not np.all(np.isfinite(x[lead])) or np.ptp(x[lead]) == 0:
                continue
            clean[lead] = nk.ecg_clean(x[lead], sampling_rate=FS, method="neurokit")
            try:
                _, info = nk.ecg_peaks(clean[lead], sampling_rate=FS, method="neurokit")
            except (ValueError, IndexError):  # no QRS-like energy at all
                continue
            r = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
            if len(r) >= 3 and _beat_correlation(clean[lead], r) >= self.min_beat_correlation:
                peaks[lead] = r
        if not peaks:
            return out

        hr_by_lead = {lead: 60.0 * FS / float(np.median(np.diff(r))) for lead, r in peaks.items()}
        hr = float(np.median(list(hr_by_lead.values())))
        out["hr"] = hr
        candidates = [LEADS.index(name) for name in self.reference_leads if LEADS.index(name) in peaks]
        agreeing = [lead for lead in candidates if abs(hr_by_lead[lead] - hr) <= 0.05 * hr]
        ref = agreeing[0] if agreeing else min(peaks, key=lambda lead: abs(hr_by_lead[lead] - hr))
        rpeaks = peaks[ref]
        n = len(rpeaks)

        fid = {k: [] for k in (_P_ON, _QRS_ON, _QRS_OFF, _T_OFF)}
        for lead in peaks:
            try:
                _, waves = nk.ecg_delineate(clean[lead], rpeaks, sampling_rate=FS, method=self.delineation)
            except (ValueError, IndexError):
                continue
            for k in fid:
                fid[k].append(_aligned(waves.get(k, []), n))
        if not fid[_QRS_ON]:
            return out
        lo, hi = self.onset_percentile, 100.0 - self.onset_percentile
        p_on = np.nanpercentile(np.stack(fid[_P_ON]), lo, axis=0)  # (leads, beats) -> (beats,)
        qrs_on = np.nanpercentile(np.stack(fid[_QRS_ON]), lo, axis=0)
        qrs_off = np.nanpercentile(np.stack(fid[_QRS_OFF]), hi, axis=0)
        t_off = np.nanpercentile(np.stack(fid[_T_OFF]), hi, axis=0)
        for target, per_beat in (("pr", qrs_on - p_on), ("qrs", qrs_off - qrs_on), ("qt", t_off - qrs_on)):
            per_beat = np.where(per_beat > 0, per_beat, np.nan)
            out[target] = _median_or_nan(per_beat) * MS_PER_SAMPLE
        return out


# ---------------------------------------------------------------------------------------------
# ecgdeli (GPL-3.0-or-later): optional, imported only when picked
# ---------------------------------------------------------------------------------------------

ECGDELI_INSTALL_HINT = (
    "the 'ecgdeli' labeller needs the ecgdeli package, which is licensed GPL-3.0-or-later "
    "(installing it makes the combined work GPL; ecgtune itself stays MIT). "
    "Install it with: pip install 'ecgtune[ecgdeli]'  — or use the default MIT labeller 'neurokit2'."
)


def _import_ecgdeli():
    try:
        return importlib.import_module("ecgdeli")
    except ImportError as e:
        raise LabellerNotInstalledError(f"{ECGDELI_INSTALL_HINT} ({e})") from e


class EcgdeliLabeller(Labeller):
    """HR, PR, QRS, QT from ecgdeli (GPL-3.0-or-later), the algorithm behind PTB-XL+'s ecgdeli features.

    ``filter_ecg`` (1–40 Hz band-pass, 50 Hz notch, isoline) then ``annotate``
    on all 8 leads; intervals from its cross-lead consensus table, median over
    beats (its per-beat values are NaN where an endpoint is missing). The same
    beat-repeatability gate as `NeuroKit2Labeller` turns noise into NaN. PR is
    ``Intervals.pq`` (QRS onset − P onset): ecgdeli's ``Intervals.pr`` is R peak
    − P onset, not the clinical PR interval.
    """

    name = "ecgdeli"

    def __init__(self, *, min_beat_correlation: float = 0.6) -> None:
        if not -1.0 <= min_beat_correlation <= 1.0:
            raise LabelError(f"min_beat_correlation must be in [-1, 1], got {min_beat_correlation}")
        self.min_beat_correlation = float(min_beat_correlation)
        _import_ecgdeli()  # fail now, with the licence and install hint, not in a worker

    @property
    def version(self) -> str:
        return package_version("ecgdeli")

    @property
    def options(self) -> dict[str, Any]:
        return {
            "filter": "filter_ecg defaults (1-40 Hz, notch 50 Hz, isoline)",
            "pr": "pq",
            "aggregate": "median",
            "min_beat_correlation": self.min_beat_correlation,
        }

    @property
    def algorithm(self) -> str:
        return (
            f"ecgdeli {self.version} filter_ecg + annotate (multi-lead consensus); PR = pq; median over beats"
        )

    def label_one(self, ecg_mv: np.ndarray) -> dict[str, float]:
        x = _check_one(ecg_mv)
        ecgdeli = _import_ecgdeli()
        out = _nan_labels()
        if not np.all(np.isfinite(x)) or np.ptp(x) == 0:
            return out
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                filtered = ecgdeli.filter_ecg(x.T, FS)  # (5000, 8): ecgdeli wants samples x leads
                ann = ecgdeli.annotate(filtered, FS)
            except (ValueError, IndexError, ArithmeticError, ecgdeli.MatlabError):
                return out  # no beats to delineate
            iv = ann.intervals()
            r = ann.consensus.samples[:, ecgdeli.Wave.R_PEAK]
            r = r[np.isfinite(r)].astype(np.int64)
            # ecgdeli delineates white noise too (measured: HR 59, PR 239, QRS 108, QT 389 on
            # 0.3 mV noise): keep only ECGs whose beats repeat on at least one lead.
            quality = [_beat_correlation(filtered[:, lead], r) for lead in range(len(LEADS))]
        if not np.nanmax(np.asarray(quality + [-1.0])) >= self.min_beat_correlation:
            return out
        rr = _median_or_nan(iv.rr)
        out["hr"] = 60000.0 / rr if rr > 0 else float("nan")
        out["pr"] = _median_or_nan(iv.pq)  # QRS onset − P onset; iv.pr is R peak − P onset
        out["qrs"] = _median_or_nan(iv.qrs_duration)
        out["qt"] = _median_or_nan(iv.qt)
        return out


LABELLERS: dict[str, type[Labeller]] = {"neurokit2": NeuroKit2Labeller, "ecgdeli": EcgdeliLabeller}


def get_labeller(name: str, **options: Any) -> Labeller:
    """The labeller registered as `name`, built with `options` (unknown options raise TypeError)."""
    if name not in LABELLERS:
        raise LabelError(f"unknown labeller {name!r}; available: {sorted(LABELLERS)}")
    return LABELLERS[name](**options)

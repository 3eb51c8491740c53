"""Simulated 12-lead ECGs whose HR, PR, QRS and QT are parameters of the generator: exact labels.

Read top to bottom: constants (with sources) -> label distributions -> wave shapes -> VCG loops ->
lead field -> `simulate_batch`. Noise lives in `ecgtune.data.simulate_noise`, the PTB-XL-format tree
in `ecgtune.data.simulated_ptbxl`.

Model. The heart is one dipole in Frank coordinates (X to the patient's left, Y to the feet, Z to
the back). Each wave (P, QRS, T) of each beat is a loop: a sum of a few lobes, each lobe a fixed 3-D
vector times a bump ``sin(pi * w(u)) ** power`` that is exactly zero outside its own time span
(u in (0, 1)); `w` is an optional monotone warp (T waves rise slowly and fall fast). The first lobe
of a wave starts at the wave's onset and the last ends at its offset, so the whole dipole is zero
outside [onset, offset] and non-zero just inside it. The dipole is projected onto leads I, II,
V1-V6 by the Dower matrix (times a per-patient heart rotation, torso gain and electrode placement);
III, aVR, aVL, aVF are derived from I and II, so III = II - I holds exactly.

Label definitions (times in ms from the start of the record, continuous, not sample-rounded):

* PR  = QRS onset - P onset, QRS = QRS offset - QRS onset, QT = T offset - QRS onset, where onset
  and offset are the *global* ones, earliest onset and latest offset over all 12 leads, as GE 12SL
  measures: the wave's support in time, since a lead is non-zero exactly where the dipole is
  (a lead whose projection vanishes at the ends shares the support, it cannot extend it).
  PR, QRS and QT are whole milliseconds and the same for every beat of a record.
* HR  = 60000 / mean RR (bpm), the mean over the RR intervals between consecutive beats whose QRS
  onset lies within the record (0 <= onset < 9998 ms, the time of the last sample). RR varies from
  beat to beat (respiratory sinus arrhythmia plus a random AR(1) part), so HR is not the drawn rate
  but the one the beats in the record have.

The labels are the generator's parameters; nothing is measured. `tests/test_simulate.py` checks
that the first/last non-zero sample of each wave component agrees with them within one sample.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from ecgtune.data.checks import implausible
from ecgtune.data.simulate_noise import NoiseLevel, add_noise, noise_level
from ecgtune.targets import LEADS, N_SAMPLES, SAMPLING_RATE_HZ, TARGET_NAMES, TARGETS

GENERATOR_VERSION = 1  # bump whenever a draw or a shape changes: same seed, other ECGs
MS_PER_SAMPLE = 1000.0 / SAMPLING_RATE_HZ  # 2 ms
LAST_SAMPLE_MS = (N_SAMPLES - 1) * MS_PER_SAMPLE  # 9998 ms: beats counted for HR start before it
WAVES: tuple[str, ...] = ("p", "qrs", "t")

# The definitions above, for `ecgtune data simulate --help` and simulation.json.
LABEL_DEFINITIONS = """\
labels (exact: parameters of the generator, not measurements; times in ms, continuous):
  PR  = QRS onset - P onset       onset/offset are global: earliest onset and latest
  QRS = QRS offset - QRS onset    offset over all 12 leads (as GE 12SL measures), i.e.
  QT  = T offset - QRS onset      the support of the wave's dipole; whole ms, the same
                                  for every beat of a record
  HR  = 60000 / mean RR (bpm) over the beats whose QRS onset lies in the record
        (0 <= onset < 9998 ms); RR varies from beat to beat
waves have compact support (sine / raised-cosine lobes, no Gaussian tails), so a wave's
first and last non-zero sample lie within one sample (2 ms) of its onset and offset."""

# --------------------------------------------------------------------------------------- constants
# Dower GE, Machado HB, Osborne JA. On deriving the electrocardiogram from vectorcardiographic
# leads. Clin Cardiol 1980;3:87-95. Frank X, Y, Z -> leads, as reproduced in Bailon, Laguna and
# Sornmo, ch. 8 of Clifford, Azuaje, McSharry (eds), Advanced Methods and Tools for ECG Data
# Analysis (Artech House 2006), and G. Clifford's DOWER/README.txt (stuff.mit.edu/~gari/CODE/DOWER)
# (there: rows V1-V6, I, II). Reordered here to `LEADS` (I, II, V1-V6). Cross-check: the inverse
# Dower matrix (Edenbrandt & Pahlm, J Electrocardiol 1988;21:361-7) times this one is the 3x3
# identity to 3 decimals (tests/test_simulate.py), and the published 12-row form's III row equals
# II - I.
DOWER = np.array(
    [
        [0.632, -0.235, 0.059],  # I
        [0.235, 1.066, -0.132],  # II
        [-0.515, 0.157, -0.917],  # V1
        [0.044, 0.164, -1.387],  # V2
        [0.882, 0.098, -1.277],  # V3
        [1.213, 0.127, -0.601],  # V4
        [1.125, 0.127, -0.086],  # V5
        [0.831, 0.076, 0.230],  # V6
    ]
)  # (8, 3)
INVERSE_DOWER = np.array(
    [
        [0.156, -0.010, -0.172, -0.074, 0.122, 0.231, 0.239, 0.194],  # X from I, II, V1-V6
        [-0.227, 0.887, 0.057, -0.019, -0.106, -0.022, 0.041, 0.048],  # Y
        [0.022, 0.102, -0.229, -0.310, -0.246, -0.063, 0.055, 0.108],  # Z
    ]
)  # (3, 8), Edenbrandt & Pahlm 1988, columns reordered to LEADS

# Label distributions. Figures marked (issue) are the targets issue 14 gives for PTB-XL's 12SL
# measurements (PTB-XL+: Strodthoff et al., Sci Data 10:279, 2023): HR 70 +- 18 bpm, PR 165 +- 30,
# QRS 95 +- 20, QT 395 +- 40 ms; the files cannot be downloaded here, so they are not re-derived.
# Other figures are textbook approximations, marked (approx.).
HR_MEDIAN_BPM = 68.0  # (issue) log-normal: median 68, sd of log 0.24 -> mean ~70, SD ~17
HR_LOG_SD_PATIENT, HR_LOG_SD_VISIT = 0.20, 0.13  # a patient's resting rate, then the visit
HR_RANGE = (40.0, 150.0)
# PR > 200 ms is first-degree AV block, QRS >= 120 ms complete bundle-branch block, 110-119 ms
# incomplete/IVCD: Surawicz et al., AHA/ACCF/HRS recommendations part III, Circulation
# 2009;119:e235-40. Shares: PTB-XL's statement counts (Wagner et al., Sci Data 7:154, 2020, quoted
# from memory, approx.): 1AVB ~800, CLBBB ~540, CRBBB ~540, IVCD ~790 of 21,799 ECGs.
PR_NORMAL_MS, PR_NORMAL_SD = 160.0, 20.0
PR_PER_YEAR_MS = 0.35  # PR lengthens with age (approx.)
PR_PER_BPM_MS = -0.4  # and shortens as the rate rises (approx.)
P_AVB1, PR_AVB1_MS, PR_AVB1_TAIL_MS = 0.05, 205.0, 35.0  # 1AVB: 205 + exponential tail
PR_RANGE = (80.0, 320.0)
CONDUCTIONS: tuple[str, ...] = ("normal", "lbbb", "rbbb", "ivcd")
CONDUCTION_P = (0.91, 0.03, 0.03, 0.03)
QRS_NORMAL_MS = {"male": 93.0, "female": 86.0}  # (approx.) women's QRS is narrower
QRS_LOG_SD = 0.11
QRS_BBB_MS, QRS_BBB_SD, QRS_IVCD_MS, QRS_IVCD_SD = 148.0, 15.0, 125.0, 12.0
QRS_RANGE = (60.0, 190.0)
# QT-RR: Framingham, QTc = QT + 0.154 (1 - RR) in s (Sagie et al., Am J Cardiol 1992;70:797-801),
# i.e. QT = QTc - 154 ms * (1 - RR/1 s). Women's QTc ~12 ms longer (approx.). A wide QRS lengthens
# QT by about half its excess (Bogossian et al., Heart Rhythm 2014;11:2273-7: QT - 0.5 * QRS in LBBB).
QTC_MS = {"male": 405.0, "female": 417.0}
QTC_SD_PATIENT, QTC_SD_VISIT = 18.0, 7.0
FRAMINGHAM_SLOPE = 0.154
QT_RANGE = (260.0, 560.0)
MIN_JT_MS = 120.0  # T wave needs room after the QRS
RR_MARGIN_MS = 60.0  # T offset at least this long before the next QRS onset
P_DURATION_MS, P_DURATION_SD = 100.0, 12.0  # (approx.) normal P < 120 ms
MIN_PR_SEGMENT_MS = 30.0

# Wave loops. Each lobe: (start, end) as fractions of the wave's duration, mean direction in Frank
# coordinates, magnitude range (mV, log-uniform). Textbook VCG shapes (approx.; Macfarlane & Lawrie,
# Comprehensive Electrocardiology, VCG chapter): QRS starts with a small right-anterior septal force,
# sweeps left-posterior-inferior to a 1-2 mV maximum, ends right-superior-posterior; LBBB has no
# septal force and a broad left-posterior loop with a discordant T; RBBB ends in a slow
# right-anterior force (R' in V1); IVCD is a slowed normal loop.
_NORMAL_QRS = (
    ((0.00, 0.22), (-0.45, 0.25, -0.85), (0.08, 0.35)),
    ((0.10, 0.60), (0.90, 0.30, -0.30), (0.30, 1.00)),
    ((0.25, 0.82), (0.65, 0.65, 0.35), (0.50, 1.80)),
    ((0.62, 1.00), (-0.45, -0.45, 0.75), (0.12, 0.60)),
)
QRS_LOBES = {
    "normal": _NORMAL_QRS,
    "lbbb": (
        ((0.00, 0.35), (0.60, 0.10, 0.20), (0.15, 0.50)),
        ((0.15, 0.65), (0.75, -0.10, 0.65), (0.50, 1.50)),
        ((0.40, 0.90), (0.70, 0.20, 0.70), (0.50, 1.50)),
        ((0.60, 1.00), (0.30, -0.20, 0.90), (0.15, 0.60)),
    ),
    "rbbb": (
        ((0.00, 0.25), (-0.45, 0.25, -0.85), (0.06, 0.30)),
        ((0.08, 0.50), (0.75, 0.55, 0.35), (0.50, 1.60)),
        ((0.35, 0.75), (-0.30, -0.20, -0.20), (0.10, 0.40)),
        ((0.45, 1.00), (-0.60, -0.10, -0.80), (0.30, 1.00)),
    ),
    "ivcd": _NORMAL_QRS,
}
_NORMAL_T = (
    ((0.00, 0.85), (0.75, 0.55, -0.35), (0.08, 0.40)),
    ((0.20, 1.00), (0.80, 0.45, -0.15), (0.08, 0.40)),
)
T_LOBES = {
    "normal": _NORMAL_T,
    "lbbb": (
        ((0.00, 0.85), (-0.60, 0.10, -0.80), (0.12, 0.50)),
        ((0.20, 1.00), (-0.50, 0.30, -0.80), (0.10, 0.40)),
    ),
    "rbbb": (
        ((0.00, 0.85), (0.60, 0.40, 0.55), (0.08, 0.40)),
        ((0.20, 1.00), (0.70, 0.40, 0.40), (0.08, 0.40)),
    ),
    "ivcd": _NORMAL_T,
}
# P: right atrium (anterior-inferior) then left atrium (left-posterior); 0.03 mV lobes make P small.
P_LOBES = (
    ((0.00, 0.65), (0.25, 0.85, -0.45), (0.03, 0.18)),
    ((0.35, 1.00), (0.70, 0.45, 0.55), (0.03, 0.18)),
)
# Bump power per wave. QRS: half-sine lobes (1) start with a finite slope, so the complex is visible
# within ~2 ms of its support at 20 uV (the abrupt onset and J point of real QRS complexes); with
# power 1.5 and longer edge lobes the first/last ~5-10 ms were nearly flat. P and T: raised cosine
# (2), their ends are gradual in real ECGs too.
POWER = {"p": 2.0, "qrs": 1.0, "t": 2.0}
LOBE_DIRECTION_SD = 0.15  # per patient, per unit-vector component
VISIT_DIRECTION_SD = 0.04
AXIS_SD_DEG = 28.0  # frontal QRS axis spread around the template's ~+45 deg (approx.)
TILT_SD_DEG = (10.0, 12.0)  # rotations about X and Y
TORSO_GAIN_LOG_SD = 0.2
PRECORDIAL_SHIFT_SD, PRECORDIAL_LEAD_SD = 0.15, 0.07  # fraction of the way to the next electrode


# ------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Wave:
    """One wave type for n ECGs: per ECG its offset from QRS onset and its duration (ms), and K lobes."""

    offset_ms: np.ndarray  # (n,) wave onset - QRS onset
    duration_ms: np.ndarray  # (n,)
    start: np.ndarray  # (n, K) lobe start, fraction of duration
    end: np.ndarray  # (n, K)
    vector: np.ndarray  # (n, K, 3) mV, heart coordinates
    warp: np.ndarray  # (n,) 0 = symmetric bump; c > 0 moves the peak later
    power: float

    def take(self, idx: np.ndarray | slice) -> Wave:
        return Wave(**{f.name: _take(getattr(self, f.name), idx) for f in fields(self)})


@dataclass(frozen=True)
class Params:
    """Everything that fixes the noise-free ECGs of a batch; `labels` holds the exact labels.

    `beat_onset_ms` (n, S): QRS onset of each beat slot, NaN for an unused slot. `beat_gain` (n, S):
    respiratory amplitude modulation. `lead_matrix` (n, 8, 3): heart dipole -> leads I, II, V1-V6 (mV).
    """

    labels: pd.DataFrame
    beat_onset_ms: np.ndarray
    beat_gain: np.ndarray
    waves: dict[str, Wave]
    lead_matrix: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray | slice) -> Params:
        """The parameters of a subset of the ECGs (rows `idx`), e.g. one chunk to render."""
        return Params(
            labels=self.labels.iloc[idx].reset_index(drop=True),
            beat_onset_ms=self.beat_onset_ms[idx],
            beat_gain=self.beat_gain[idx],
            waves={k: w.take(idx) for k, w in self.waves.items()},
            lead_matrix=self.lead_matrix[idx],
        )


def _take(v, idx):
    return v[idx] if isinstance(v, np.ndarray) else v


# ---------------------------------------------------------------------------- label distributions


def _beat_train(rr0: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """QRS onsets (n, S) in ms for a drawn mean RR (n,), and the respiratory frequency (n,) in Hz.

    RR_k = RR0 * (1 + RSA sinusoid + AR(1) noise), clipped to +-15 %. Slot 0 lies one to two RRs
    before the record, so the record starts at a random phase of the cycle.
    """
    n = len(rr0)
    n_slots = int(np.ceil((LAST_SAMPLE_MS + 2 * rr0.max() + PR_RANGE[1]) / (0.85 * rr0.min()))) + 2
    resp_hz = rng.uniform(0.15, 0.35, n)
    rsa = rng.uniform(0.005, 0.05, n) * np.clip(rr0 / 900.0, 0.3, 1.5)  # RSA is larger at slow rates
    phase = rng.uniform(0, 2 * np.pi, n)
    eps = rng.normal(0.0, 1.0, (n, n_slots)) * rng.uniform(0.004, 0.02, (n, 1))
    ar = np.empty_like(eps)  # (n, S) AR(1), coefficient 0.6: slow drifts of the rate
    ar[:, 0] = eps[:, 0]
    for k in range(1, n_slots):
        ar[:, k] = 0.6 * ar[:, k - 1] + eps[:, k]
    k = np.arange(n_slots)
    rsa_term = rsa[:, None] * np.sin(2 * np.pi * resp_hz[:, None] * k * rr0[:, None] / 1000 + phase[:, None])
    rr = rr0[:, None] * (1 + rsa_term + ar)  # (n, S)
    rr = np.clip(rr, 0.85 * rr0[:, None], 1.15 * rr0[:, None])  # (n, S)
    first = -rr0 * (1 + rng.uniform(0, 1, n))
    onsets = first[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1)
    return onsets, resp_hz


def _hr_from_onsets(onsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(HR bpm, beats counted) from QRS onsets (n, S): 60000 / mean RR of the beats in the record."""
    inside = (onsets >= 0) & (onsets < LAST_SAMPLE_MS)  # (n, S)
    count = inside.sum(axis=1)
    first = np.where(inside, onsets, np.inf).min(axis=1)
    last = np.where(inside, onsets, -np.inf).max(axis=1)
    return 60000.0 * (count - 1) / (last - first), count  # mean RR = span / (beats - 1)


def draw_labels(
    n: int, rng: np.random.Generator, patient: np.ndarray | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Draw patients, visits and the four exact labels; return (labels, beat onsets (n, S) ms, resp Hz (n,)).

    `patient` (n,) ints 0..P-1 maps ECGs to patients (default: one patient per ECG); ECGs of a
    patient share age, sex, conduction and the individual parts of PR, QRS and QTc. labels columns:
    hr (bpm), pr, qrs, qt (ms, whole), rr_ms (mean RR), n_beats, patient, age (years), sex (PTB-XL
    coding, 0 male / 1 female), conduction (`CONDUCTIONS`), p_ms (P duration), qtc_ms (Framingham).
    """
    patient = np.arange(n) if patient is None else np.asarray(patient, dtype=np.int64)
    if patient.shape != (n,) or (n and patient.min() < 0):
        raise ValueError(f"patient must be {n} non-negative ints (one per ECG), got shape {patient.shape}")
    n_pat = int(patient.max()) + 1 if n else 0
    # Patient level.
    age = np.clip(np.round(rng.normal(60.0, 17.0, n_pat)), 18, 89)  # PTB-XL ages, approx.
    female = rng.random(n_pat) < 0.48
    conduction = rng.choice(len(CONDUCTIONS), size=n_pat, p=CONDUCTION_P)
    hr_log = rng.normal(np.log(HR_MEDIAN_BPM), HR_LOG_SD_PATIENT, n_pat)
    avb1 = rng.random(n_pat) < P_AVB1
    pr_base = np.where(
        avb1,
        PR_AVB1_MS + rng.exponential(PR_AVB1_TAIL_MS, n_pat),
        rng.normal(PR_NORMAL_MS, PR_NORMAL_SD, n_pat) + PR_PER_YEAR_MS * (age - 60.0),
    )
    qrs_normal = np.where(female, QRS_NORMAL_MS["female"], QRS_NORMAL_MS["male"])
    qrs_base = np.select(
        [conduction == 0, conduction == 3],
        [qrs_normal * np.exp(rng.normal(0, QRS_LOG_SD, n_pat)), rng.normal(QRS_IVCD_MS, QRS_IVCD_SD, n_pat)],
        np.clip(rng.normal(QRS_BBB_MS, QRS_BBB_SD, n_pat), 120.0, QRS_RANGE[1]),
    )
    qtc_base = np.where(female, QTC_MS["female"], QTC_MS["male"]) + rng.normal(0, QTC_SD_PATIENT, n_pat)
    # Visit level: rate first, then the beats, then the intervals that depend on the rate.
    hr0 = np.clip(np.exp(hr_log[patient] + rng.normal(0, HR_LOG_SD_VISIT, n)), *HR_RANGE)
    onsets, resp_hz = _beat_train(60000.0 / hr0, rng)
    hr, n_beats = _hr_from_onsets(onsets)
    rr = 60000.0 / hr
    min_rr = np.diff(onsets, axis=1).min(axis=1)
    qrs = np.clip(qrs_base[patient] + rng.normal(0, 2.0, n), *QRS_RANGE)
    qrs = np.where(np.isin(conduction[patient], (1, 2)), np.maximum(qrs, 120.0), qrs).round()
    pr = pr_base[patient] + rng.normal(0, 5.0, n) + PR_PER_BPM_MS * (hr - 70.0)
    pr = np.clip(pr, PR_RANGE[0], np.minimum(PR_RANGE[1], min_rr - qrs - 20.0)).round()
    qtc = qtc_base[patient] + rng.normal(0, QTC_SD_VISIT, n) + 0.5 * np.maximum(qrs - 100.0, 0.0)
    qt = qtc - 1000.0 * FRAMINGHAM_SLOPE * (1.0 - rr / 1000.0)
    qt = np.clip(qt, np.maximum(QT_RANGE[0], qrs + MIN_JT_MS), np.minimum(QT_RANGE[1], min_rr - RR_MARGIN_MS))
    qt = qt.round()
    p_ms = np.clip(rng.normal(P_DURATION_MS, P_DURATION_SD, n), 50.0, pr - MIN_PR_SEGMENT_MS)
    labels = pd.DataFrame(
        {
            "hr": hr, "pr": pr, "qrs": qrs, "qt": qt, "rr_ms": rr, "n_beats": n_beats,
            "patient": patient, "age": age[patient], "sex": female[patient].astype(int),
            "conduction": np.asarray(CONDUCTIONS)[conduction[patient]], "p_ms": p_ms,
            "qtc_ms": qt + 1000.0 * FRAMINGHAM_SLOPE * (1.0 - rr / 1000.0),
        }
    )  # fmt: skip
    bad = (implausible(labels) | labels[list(TARGET_NAMES)].isna()).any()  # draws are clipped well inside
    if bad.any():
        t = bad.idxmax()
        raise RuntimeError(f"simulated {t} outside {TARGETS[t].plausible}: generator bug")
    return labels, onsets, resp_hz


# ------------------------------------------------------------------------------ wave shapes, loops


def _rotation(ax: np.ndarray, ay: np.ndarray, az: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotations: about Z by `az` (frontal axis: X toward Y), then Y by `ay`, X by `ax` (rad)."""
    c, s, one, zero = np.cos, np.sin, np.ones_like(ax), np.zeros_like(ax)
    rz = np.stack([c(az), -s(az), zero, s(az), c(az), zero, zero, zero, one], -1).reshape(-1, 3, 3)
    ry = np.stack([c(ay), zero, s(ay), zero, one, zero, -s(ay), zero, c(ay)], -1).reshape(-1, 3, 3)
    rx = np.stack([one, zero, zero, zero, c(ax), -s(ax), zero, s(ax), c(ax)], -1).reshape(-1, 3, 3)
    return rx @ ry @ rz


def _lobe_table(tables: tuple[tuple, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lobe templates (one K-lobe table per conduction) as arrays (C, K, 2), (C, K, 3), (C, K, 2)."""
    span = np.array([[lobe[0] for lobe in t] for t in tables], dtype=float)
    direction = np.array([[lobe[1] for lobe in t] for t in tables], dtype=float)
    magnitude = np.array([[lobe[2] for lobe in t] for t in tables], dtype=float)
    return span, direction / np.linalg.norm(direction, axis=-1, keepdims=True), magnitude


def _lobes(
    tables: tuple[tuple, ...], kind: np.ndarray, patient: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """(start, end, vector) arrays (n, K), (n, K), (n, K, 3): lobe table `kind[i]` of `tables` for ECG i.

    Directions are jittered per patient (then slightly per visit), magnitudes are log-uniform per
    patient (+-8 % per visit), drawn independently of the durations, so no amplitude tells a width.
    Inner lobe boundaries move +-0.03; the first lobe always starts at 0 and the last ends at 1
    (the wave's support), and lobes overlap (no gap inside a wave).
    """
    span, direction, lo_hi = (a[kind] for a in _lobe_table(tables))  # (n, K, 2), (n, K, 3), (n, K, 2)
    n, k = span.shape[:2]
    n_pat = int(patient.max()) + 1 if n else 0
    jitter = rng.normal(0, LOBE_DIRECTION_SD, (n_pat, k, 3))[patient] + rng.normal(
        0, VISIT_DIRECTION_SD, (n, k, 3)
    )
    direction = direction + jitter
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    u = rng.random((n_pat, k))[patient]
    mag = np.exp(np.log(lo_hi[..., 0]) + u * np.log(lo_hi[..., 1] / lo_hi[..., 0]))  # (n, K) mV
    mag *= np.exp(rng.normal(0, 0.08, (n, k)))
    span = span + rng.normal(0, 0.03, (n_pat, k, 2))[patient]
    start = np.clip(span[..., 0], 0.0, 0.8)
    end = np.clip(np.maximum(span[..., 1], start + 0.15), 0.0, 1.0)
    start[:, 0], end[:, -1] = 0.0, 1.0
    # No gap between lobes: each starts before the lobes before it have ended, so the wave is one
    # interval of non-zero dipole (lobes are ordered by their template starts).
    covered = np.maximum.accumulate(end, axis=1)[:, :-1]  # (n, K-1)
    start[:, 1:] = np.clip(np.minimum(start[:, 1:], covered - 0.05), 0.0, None)
    return start, end, direction * mag[..., None]


def draw_parameters(n: int, rng: np.random.Generator, patient: np.ndarray | None = None) -> Params:
    """Labels (`draw_labels`) plus everything the waveforms need: loops, beat gains, lead field."""
    labels, onsets, resp_hz = draw_labels(n, rng, patient)
    patient = labels["patient"].to_numpy()
    n_pat = int(patient.max()) + 1 if n else 0
    kind = pd.Categorical(labels["conduction"], categories=CONDUCTIONS).codes.astype(np.int64)  # (n,)
    pr, qrs, qt = (labels[c].to_numpy(dtype=float) for c in ("pr", "qrs", "qt"))
    jt = qt - qrs
    t_ms = jt * rng.uniform(0.6, 0.9, n)  # the rest of JT is the ST segment (approx.)
    waves: dict[str, Wave] = {}
    for name, tables, kinds, offset, duration, warp in (
        ("p", (P_LOBES,), np.zeros(n, np.int64), -pr, labels["p_ms"].to_numpy(), np.zeros(n)),
        ("qrs", tuple(QRS_LOBES[c] for c in CONDUCTIONS), kind, np.zeros(n), qrs, np.zeros(n)),
        (
            "t",
            tuple(T_LOBES[c] for c in CONDUCTIONS),
            kind,
            qt - t_ms,
            t_ms,
            rng.uniform(0.2, 0.6, n_pat)[patient],
        ),
    ):
        start, end, vector = _lobes(tables, kinds, patient, rng)
        waves[name] = Wave(offset, duration, start, end, vector, warp, POWER[name])
    # Lead field: per-patient heart rotation (electrical axis), per-visit small change, torso gain,
    # precordial electrodes shifted toward their neighbours (placement varies between recordings).
    deg = np.pi / 180
    heart = _rotation(*(rng.normal(0, sd * deg, n_pat)[patient] for sd in (*TILT_SD_DEG, AXIS_SD_DEG)))
    visit = _rotation(*(rng.normal(0, 3 * deg, n) for _ in range(3)))
    gain = np.exp(rng.normal(0, TORSO_GAIN_LOG_SD, n))
    v = DOWER[2:]  # (6, 3) V1-V6
    v_next = np.concatenate([v[1:], 2 * v[-1:] - v[-2:-1]])  # one electrode further, V6 extrapolated
    shift = rng.normal(0, PRECORDIAL_SHIFT_SD, (n, 1)) + rng.normal(0, PRECORDIAL_LEAD_SD, (n, 6))
    lead = np.broadcast_to(DOWER, (n, 8, 3)).copy()
    lead[:, 2:] += shift[..., None] * (v_next - v)  # (n, 6, 3)
    lead = gain[:, None, None] * lead @ heart @ visit  # (n, 8, 3)
    # Breathing moves the heart: beat amplitudes follow the respiration (+-0-8 %).
    beat_gain = 1 + rng.uniform(0, 0.08, (n, 1)) * np.sin(
        2 * np.pi * resp_hz[:, None] * onsets / 1000 + rng.uniform(0, 2 * np.pi, (n, 1))
    )
    visible = (onsets + qt[:, None] > 0) & (onsets - pr[:, None] < LAST_SAMPLE_MS)  # (n, S)
    onsets = np.where(visible, onsets, np.nan)
    keep = visible.any(axis=0)
    return Params(labels, onsets[:, keep], beat_gain[:, keep], waves, lead.astype(np.float32))


# ------------------------------------------------------------------------------------ rendering


def render(params: Params, waves: tuple[str, ...] = WAVES) -> np.ndarray:
    """Noise-free ECGs of `params`: float32 mV, (n, 8, 5000), leads `LEADS` (I, II, V1-V6), 500 Hz.

    Only the waves named in `waves` are drawn (e.g. ("qrs",) for the QRS component alone). The
    dipole is built beat slot by beat slot for the whole batch at once, then projected.
    """
    unknown = [w for w in waves if w not in WAVES]
    if unknown:
        raise ValueError(f"unknown wave(s) {unknown}; allowed: {list(WAVES)}")
    n = len(params)
    sizes = (
        {w: int(np.ceil(params.waves[w].duration_ms.max() / MS_PER_SAMPLE)) + 1 for w in waves} if n else {}
    )
    pad = max(sizes.values(), default=1)
    dipole = np.zeros((n, N_SAMPLES + 2 * pad, 3), np.float32)  # (n, T + pad, 3), heart coordinates
    for slot in range(params.beat_onset_ms.shape[1]):
        qrs_on = params.beat_onset_ms[:, slot]
        for name in waves:
            wave = params.waves[name]
            onset = qrs_on + wave.offset_ms
            first = np.floor(onset / MS_PER_SAMPLE) + 1  # first sample strictly after the onset
            rows = np.flatnonzero((first + sizes[name] > 0) & (first < N_SAMPLES))  # NaN slots drop out
            if len(rows):
                _add_wave(dipole, rows, onset[rows], first[rows].astype(np.int64), wave.take(rows),
                          params.beat_gain[rows, slot], sizes[name], pad)  # fmt: skip
    dipole = dipole[:, pad : pad + N_SAMPLES]  # (n, 5000, 3)
    return np.matmul(params.lead_matrix, dipole.transpose(0, 2, 1))  # (n, 8, 3) @ (n, 3, 5000)


def _add_wave(dipole, rows, onset, first, wave: Wave, gain, size: int, pad: int) -> None:
    """Add one wave of one beat slot to `dipole` (n, T + 2 pad, 3) for the ECGs `rows` (m,)."""
    idx = first[:, None] + np.arange(size)  # (m, L) sample numbers
    s = (idx * MS_PER_SAMPLE - onset[:, None]) / wave.duration_ms[:, None]  # (m, L) fraction of the wave
    u = (s[:, None, :] - wave.start[..., None]) / (wave.end - wave.start)[..., None]  # (m, K, L)
    u = np.where((u > 0) & (u < 1), u, 0.0)  # exactly zero outside each lobe: compact support
    u = u - wave.warp[:, None, None] * u * (1 - u)  # monotone on [0, 1], fixes both ends
    bump = np.sin(np.pi * u.astype(np.float32))  # (m, K, L)
    if wave.power == 2.0:
        bump = bump * bump
    elif wave.power != 1.0:
        bump = bump**wave.power
    contrib = np.matmul(bump.transpose(0, 2, 1), (wave.vector * gain[:, None, None]).astype(np.float32))
    dipole[rows[:, None], idx + pad] += contrib  # (m, L, 3); rows are distinct, so += is safe


def twelve_leads(x8: np.ndarray) -> np.ndarray:
    """(…, 8, T) leads I, II, V1-V6 -> (…, 12, T) in `PTBXL_LEADS` order: III = II - I,
    aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2 (Einthoven/Goldberger), computed, not drawn."""
    i, ii = x8[..., 0, :], x8[..., 1, :]
    limb = np.stack([i, ii, ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2], axis=-2)
    return np.concatenate([limb, x8[..., 2:, :]], axis=-2)


def simulate_batch(
    n: int,
    rng: np.random.Generator,
    *,
    noise: str | NoiseLevel = "realistic",
    patient: np.ndarray | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """n simulated ECGs and their exact labels: (signals, labels).

    signals: float32 mV, shape (n, 12, 5000), 500 Hz, leads `PTBXL_LEADS` (I, II, III, AVR, AVL,
    AVF, V1-V6). labels: see `draw_labels` (hr bpm, pr/qrs/qt ms, ...). `noise`: a preset name of
    `NOISE_LEVELS` ("clean", "low", "realistic", "high") or a `NoiseLevel`. Everything follows from
    `rng`: the same seed gives the same ECGs.
    """
    params = draw_parameters(n, rng, patient)
    x8 = render(params)
    add_noise(x8, noise_level(noise), rng)
    return twelve_leads(x8), params.labels


if tuple(LEADS) != ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"):
    raise ImportError(f"DOWER's rows and twelve_leads() assume LEADS = I, II, V1-V6, not {LEADS}")

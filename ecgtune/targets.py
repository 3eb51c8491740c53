"""The four ECG measurements ecgtune predicts, and the signal layout it reads.

This module is the one vocabulary of the project: labellers, the store, the
loss, the metrics and the report all take names, units, plausible ranges and
tolerances from here. Nobody else types "qt" or a range.
"""

from __future__ import annotations

from dataclasses import dataclass

# Signal layout shared by DeepFake and PTB-XL at 500 Hz. III, aVR, aVL and aVF
# are linear combinations of I and II, so the study (and ecgtune) keeps 8 leads.
LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
SAMPLING_RATE_HZ = 500
DURATION_S = 10
N_SAMPLES = SAMPLING_RATE_HZ * DURATION_S  # 5000

# Stores keep integer microvolts: DeepFake .asc files are integer µV and PTB-XL
# records are 16-bit with adc_gain 1000/mV, so int16 µV is exact for both and
# half the size of float32. Models see float32 millivolts.
MICROVOLTS_PER_MILLIVOLT = 1000


@dataclass(frozen=True)
class Target:
    """One clinical measurement.

    `plausible` is the physiological range a label must fall in to be kept
    (values outside are dropped as labelling failures, with a count).
    `tolerance` is the error scale used to put targets on one footing in the
    objective: objective = mean over targets of MAE / tolerance.
    """

    name: str
    title: str
    unit: str
    plausible: tuple[float, float]
    tolerance: float


# Tolerances: IEC 60601-2-25 (2011), clause 201.12.4.4.2 — automated interval
# measurements on the CSE database must agree with the reference within these
# standard deviations: PR 10 ms, QRS 10 ms, QT 30 ms (the "mean difference"
# limits are ±10/±10/±25 ms). The standard sets none for heart rate; ecgtune
# uses 5 bpm, the accuracy AAMI EC13 asks of cardiac monitors (±10% or ±5 bpm).
TARGETS: dict[str, Target] = {
    "hr": Target("hr", "HR", "bpm", (30.0, 220.0), 5.0),
    "pr": Target("pr", "PR", "ms", (60.0, 400.0), 10.0),
    "qrs": Target("qrs", "QRS", "ms", (40.0, 250.0), 10.0),
    "qt": Target("qt", "QT", "ms", (200.0, 700.0), 30.0),
}
TARGET_NAMES: tuple[str, ...] = tuple(TARGETS)


def check_targets(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate a list of target names; return them in canonical order."""
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}; allowed: {list(TARGET_NAMES)}")
    if not names:
        raise ValueError(f"at least one target is needed; allowed: {list(TARGET_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate targets in {list(names)}")
    return tuple(n for n in TARGET_NAMES if n in names)

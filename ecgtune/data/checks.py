"""Rules every reader applies, whatever the format: to signals (no flat lead in the 10 s kept) and
to labels (values outside `TARGETS[t].plausible` are dropped, with a count)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecgtune.data.errors import RecordFormatError
from ecgtune.targets import LEADS, TARGET_NAMES, TARGETS

# A lead whose 10 s span less than this is a lead-off or a dead channel, not an ECG: the smallest
# QRS complexes of real limb leads are ~0.1 mV, and a recording's noise alone moves a few µV.
FLAT_LEAD_MAX_SPAN_MV = 0.01


def check_no_flat_lead(signals_mv: np.ndarray, where: object) -> None:
    """Refuse (RecordFormatError, reason "flat_lead") an ECG with a lead that barely moves.

    `signals_mv`: (8, n) millivolts in `LEADS` order.
    """
    span = np.ptp(np.asarray(signals_mv, dtype=np.float64), axis=1)  # (8,)
    flat = [lead for lead, s in zip(LEADS, span, strict=True) if not s >= FLAT_LEAD_MAX_SPAN_MV]
    if flat:
        raise RecordFormatError(
            f"{where}: lead(s) {flat} span less than {FLAT_LEAD_MAX_SPAN_MV * 1000:g} µV over the 10 s "
            "(a lead-off or dead channel); expected a recorded ECG in every lead",
            reason="flat_lead",
        )


def implausible(labels: pd.DataFrame) -> pd.DataFrame:
    """Which label values lie outside `TARGETS[t].plausible`: a bool frame (labels' index, columns
    `TARGET_NAMES`). `labels` holds float columns hr (bpm), pr, qrs, qt (ms); NaN (missing) is never
    implausible, ±inf always is."""
    bad = {}
    for t in TARGET_NAMES:
        lo, hi = TARGETS[t].plausible
        v = labels[t]
        bad[t] = (v.notna() & ((v < lo) | (v > hi))).to_numpy()
    return pd.DataFrame(bad, index=labels.index)


def drop_implausible(labels: pd.DataFrame) -> pd.DataFrame:
    """Set each implausible value (`implausible`) of `labels` to NaN, in place; return the mask of
    values dropped, for the reader's count."""
    bad = implausible(labels)
    for t in TARGET_NAMES:
        labels.loc[bad[t].to_numpy(), t] = np.nan
    return bad


def label_counts(labels: pd.DataFrame, dropped: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per target: "missing" values of `labels` (NaN, the dropped ones included) and "implausible"
    ones (`dropped`, the mask `drop_implausible` returned)."""
    return {
        "missing": {t: int(labels[t].isna().sum()) for t in TARGET_NAMES},
        "implausible": {t: int(dropped[t].sum()) for t in TARGET_NAMES},
    }


def require_labelled(labels: pd.DataFrame, targets, where: object) -> None:
    """Refuse a split in which some target has no label at all: a model cannot learn it from a
    training split, and a validation split's MAE for it (so the objective) would be NaN, which reads
    as a diverged trial. `labels`: the split's label rows."""
    empty = [t for t in targets if not labels[t].notna().any()]
    if empty:
        raise ValueError(
            f"{where}: none of its {len(labels)} ECGs has a {'/'.join(empty)} label; every target of the "
            "spec needs labelled ECGs to train on and be scored against (drop it from `targets`, or "
            "convert with a label source that has it)"
        )


def hr_from_rr(rr_ms: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(hr bpm = 60000 / RR, mask of RRs <= 0): an RR of zero or less gives no HR (NaN) and counts as
    an implausible HR, not a missing one."""
    return 60000.0 / rr_ms.where(rr_ms > 0), rr_ms.notna() & (rr_ms <= 0)

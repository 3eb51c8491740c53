"""Signal rules every reader applies to the 10 s it keeps, whatever the format."""

from __future__ import annotations

import numpy as np

from ecgtune.data.errors import RecordFormatError
from ecgtune.targets import LEADS

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

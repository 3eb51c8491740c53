"""The embedded demo data's PTB-XL stand-in is real PTB-XL format: the real loader reads it back whole."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgtune.data.demo import write_ptbxl_standin
from ecgtune.data.ptbxl import convert_ptbxl, record_name
from ecgtune.targets import LEADS, TARGETS


@pytest.mark.slow
def test_ptbxl_standin_reads_back_through_the_real_loader(tmp_path):
    n = 16
    source = write_ptbxl_standin(tmp_path / "ptbxl-format", n=n, seed=3)
    store, reused = convert_ptbxl(source, tmp_path / "store", label_source="12sl")
    assert not reused

    labels = store.labels
    assert len(labels) == n  # every simulated record is readable and kept
    # PTB-XL's rule: a patient's recordings share one fold, so one split
    assert (labels.groupby("patient_id")["split"].nunique() == 1).all()
    for t, spec in TARGETS.items():
        values = labels[t].dropna()
        assert len(values) >= n - 1, f"{t}: the delineator missed {n - len(values)} of {n}"
        assert values.between(*spec.plausible).all(), f"{t}: {values.tolist()}"

    # The store holds exactly the WFDB records' eight leads, in µV.
    split = labels["split"].iloc[0]
    rows = labels[labels["split"] == split]
    first = rows.iloc[0]
    record = wfdb.rdrecord(str(source / record_name(int(first["record_id"]))))
    wanted = [record.sig_name.index(lead) for lead in LEADS]
    expected = np.rint(record.p_signal[:, wanted].T * 1000)
    got = store.signals(split)[0]
    np.testing.assert_allclose(got, expected, atol=1)

"""The data rules have one owner, `ecgtune.data.checks`: the PTB-XL+ feature reader, the DeepFake
ground-truth reader and the labelling pool drop the same label values.

Fixture: one table of labels typed out here, per target at the plausible bounds (kept), just
outside them (dropped) and missing; written as a PTB-XL+ 12sl table (`write_features`), as a
DeepFake ground-truth CSV (hr as avgrrinterval = 60000 / hr: 220 bpm comes back as
219.99999999999997, inside) and returned by a labeller.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecgtune.data.checks import drop_implausible, hr_from_rr
from ecgtune.data.deepfake import read_ground_truth
from ecgtune.data.labellers import Labeller
from ecgtune.data.labels import label_ecgs
from ecgtune.data.ptbxl import read_features
from ecgtune.data.ptbxl_format import write_features
from ecgtune.targets import TARGET_NAMES, TARGETS

NAN = float("nan")
# rows: at the lower bound, at the upper bound, below, above, missing
LABELS = pd.DataFrame(
    {
        "hr": [30.0, 220.0, 25.0, 240.0, NAN],  # RR 2000, 272.7..., 2400, 250 ms
        "pr": [60.0, 400.0, 59.0, 401.0, NAN],
        "qrs": [40.0, 250.0, 39.0, 251.0, NAN],
        "qt": [200.0, 700.0, 199.0, 701.0, NAN],
    }
)
KEPT = LABELS.iloc[:2]


def test_bounds_are_the_targets_ranges():
    for t in TARGET_NAMES:
        assert tuple(LABELS.loc[:1, t]) == TARGETS[t].plausible  # the fixture tests the real bounds


class TableLabeller(Labeller):
    """Returns row i of LABELS for an ECG whose samples all equal i (mV)."""

    name = "table"
    version = "0"

    def label_one(self, ecg_mv):
        return LABELS.iloc[int(round(ecg_mv[0, 0]))].to_dict()


def expect_kept(got: pd.DataFrame) -> None:
    got = got[list(TARGET_NAMES)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.iloc[:2], KEPT, check_dtype=False)
    assert got.iloc[2:].isna().all().all()


def test_readers_and_labeller_pool_drop_the_same_values(tmp_path):
    ids = pd.Series(range(1, len(LABELS) + 1), name="ecg_id")
    features = read_features(write_features(tmp_path / "12sl_features.csv", pd.concat([ids, LABELS], axis=1)),
                             "12sl").sort_values("ecg_id")  # fmt: skip
    gt_csv = tmp_path / "ground_truth.csv"
    pd.DataFrame(
        {"patid": ids, "avgrrinterval": 60000.0 / LABELS["hr"], **{t: LABELS[t] for t in ("pr", "qrs", "qt")}}
    ).to_csv(gt_csv, index=False)
    ground_truth = read_ground_truth(gt_csv)
    signals = np.arange(len(LABELS), dtype=float)[:, None, None] * np.ones((1, 8, 5000))
    labelled, counts = label_ecgs(signals, TableLabeller(), workers=1, progress=False)

    for got in (features, ground_truth, labelled):
        expect_kept(got)
    for got in (features, ground_truth):
        assert got.attrs["implausible"] == dict.fromkeys(TARGET_NAMES, 2)
        assert got.attrs["missing"] == dict.fromkeys(TARGET_NAMES, 3)
    assert counts["dropped"] == dict.fromkeys(TARGET_NAMES, 2)
    assert counts["failed"] == dict.fromkeys(TARGET_NAMES, 1) and counts["labelled"] == 2


def test_drop_implausible_and_hr_from_rr():
    labels = LABELS.copy()
    dropped = drop_implausible(labels)
    assert dropped.sum().to_dict() == dict.fromkeys(TARGET_NAMES, 2)
    expect_kept(labels)
    hr, nonpositive = hr_from_rr(pd.Series([1000.0, 0.0, -5.0, NAN]))
    assert hr.iloc[0] == 60.0 and hr.iloc[1:].isna().all()
    assert nonpositive.tolist() == [False, True, True, False]  # an RR <= 0 is implausible, not missing

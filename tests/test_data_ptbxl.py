"""Tests of ecgtune.data.ptbxl (PTB-XL 1.0.3 records + PTB-XL+ 1.0.1 labels as published), of the
WFDB record reader it shares with prediction (ecgtune.data.wfdb_record) and of the format's writers
(ecgtune.data.ptbxl_format).

Fixtures and how each is made:

* WFDB records: `write_record` (format 16, adc_gain 1000/mV, baseline 0, units
  mV, signals I, II, III, AVR, AVL, AVF, V1-V6; byte for byte what wfdb.wrsamp
  writes, checked below against wfdb.wrsamp itself) at
  `records500/<group>/<ecg_id>_hr.{hea,dat}`; signals are seeded sums of sines
  in mV. Broken variants are made from them by truncating the .dat, rewriting
  the .hea, or flipping bytes.
* `ptbxl_database.csv`: `write_database` with PTB-XL 1.0.3's 28-column header
  (patient_id written as a float, scp_codes as a dict literal).
* PTB-XL+ feature tables: `write_features` (ecg_id mid-table, rows shuffled),
  and for the PR/QT guard a CSV typed out by hand here with the published
  column names, so the guard does not trust the module's own mapping.
* Real PhysioNet records from tests/fixtures/physionet (see its README): PTB
  `s0010_re` (15 leads incl. the 12 standard ones, lowercase names, 1000 Hz,
  38.4 s) and MIT-BIH `100` (MLII, V5 at 360 Hz).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

import ecgtune.data.ptbxl as ptbxl
from ecgtune.data.errors import LabelFormatError, RecordFormatError
from ecgtune.data.ptbxl import convert_ptbxl, is_normal, read_database, read_features, split_for_fold
from ecgtune.data.ptbxl_format import (
    DATABASE_COLUMNS,
    PTBXL_LEADS,
    record_name,
    write_database,
    write_features,
    write_record,
    write_wfdb16,
)
from ecgtune.data.store import ECGStore
from ecgtune.data.wfdb_record import read_record
from ecgtune.predict import read_windows
from ecgtune.targets import LEADS, N_SAMPLES

PHYSIONET = Path(__file__).resolve().parent / "fixtures" / "physionet"
LEAD_INDEX = [PTBXL_LEADS.index(lead) for lead in LEADS]  # the 8 of the 12 PTB-XL leads, in LEADS order


def signals_12(seed: int, n: int = N_SAMPLES, fs: float = 500.0) -> np.ndarray:
    """(12, n) mV: a few sines per lead, distinct per seed and lead."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    f = rng.uniform(0.8, 8.0, size=(12, 3))
    a = rng.uniform(0.05, 0.6, size=(12, 3))
    ph = rng.uniform(0, 2 * np.pi, size=(12, 3))
    return (a[:, :, None] * np.sin(2 * np.pi * f[:, :, None] * t + ph[:, :, None])).sum(axis=1)


def expected_uv(seed: int) -> np.ndarray:
    """What the store must hold for a record written from signals_12(seed): int16 µV of the 8 leads."""
    return np.rint(signals_12(seed)[LEAD_INDEX] * 1000).astype(np.int16)


# --------------------------------------------------------------------------- splits and NORM


@pytest.mark.parametrize("fold, split", [(1, "train"), (5, "train"), (8, "train"), (9, "val"), (10, "test")])
def test_split_for_fold(fold, split):
    assert split_for_fold(fold) == split
    assert split_for_fold(np.int64(fold)) == split


@pytest.mark.parametrize("fold", [0, 11, -1, 2.5, "3", True, None])
def test_fold_outside_1_to_10_is_an_error(fold):
    with pytest.raises(ValueError, match="1-10"):
        split_for_fold(fold)


def test_is_normal_needs_norm_at_the_likelihood():
    assert is_normal({"NORM": 100.0, "SR": 0.0})
    # PTB-XL also records NORM at likelihood 0: a key test or substring match would take it.
    assert not is_normal({"NORM": 0.0, "SR": 0.0})
    assert "NORM" in str({"NORM": 0.0, "SR": 0.0})
    assert not is_normal({"NORM": 80.0})
    assert is_normal({"NORM": 80.0}, min_likelihood=80.0)
    assert not is_normal({"IMI": 100.0, "SR": 0.0})
    assert not is_normal({})
    with pytest.raises(TypeError):
        is_normal("{'NORM': 100.0}")  # the raw string must be parsed first
    with pytest.raises(ValueError):
        is_normal({"NORM": 100.0}, min_likelihood=150)


# --------------------------------------------------------------------------- ptbxl_database.csv


def database_rows(specs) -> pd.DataFrame:
    """specs: (ecg_id, patient_id, strat_fold, scp_codes) tuples."""
    return pd.DataFrame(specs, columns=["ecg_id", "patient_id", "strat_fold", "scp_codes"])


def test_database_round_trip_with_published_header(tmp_path):
    rows = database_rows(
        [(1, 15709, 3, {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}), (2, 13243, 2, {"IMI": 35.0})]
    )
    path = write_database(tmp_path, rows)
    header = path.read_text().splitlines()[0].split(",")
    assert tuple(header) == DATABASE_COLUMNS
    raw = pd.read_csv(path)
    assert raw.loc[0, "patient_id"] == 15709.0 and "15709.0" in path.read_text()
    assert raw.loc[0, "scp_codes"] == "{'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}"
    assert raw.loc[1, "filename_hr"] == "records500/00000/00002_hr"

    db = read_database(tmp_path)
    assert db["ecg_id"].tolist() == [1, 2]
    assert db["patient_id"].tolist() == ["15709", "13243"]
    assert db.loc[0, "scp_codes"] == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert db["strat_fold"].tolist() == [3, 2]
    assert read_database(path)["ecg_id"].tolist() == [1, 2]  # the CSV itself works too


def test_database_columns_are_found_by_name(tmp_path):
    path = write_database(tmp_path, database_rows([(7, 70, 9, {"NORM": 100.0})]))
    raw = pd.read_csv(path)
    raw[list(reversed(raw.columns))].to_csv(path, index=False)
    db = read_database(tmp_path)
    assert db.loc[0, "ecg_id"] == 7 and db.loc[0, "patient_id"] == "70" and db.loc[0, "strat_fold"] == 9


def test_database_missing_column_names_file_and_column(tmp_path):
    path = write_database(tmp_path, database_rows([(1, 1, 1, {"NORM": 100.0})]))
    pd.read_csv(path).drop(columns=["strat_fold"]).to_csv(path, index=False)
    with pytest.raises(LabelFormatError, match=r"ptbxl_database\.csv.*'strat_fold'"):
        read_database(tmp_path)


def test_scp_codes_are_parsed_as_literals_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    write_database(tmp_path, database_rows([(1, 1, 1, code)]))
    with pytest.raises(LabelFormatError, match=r"ptbxl_database\.csv.*ecg_id 1.*scp_codes"):
        read_database(tmp_path)
    assert not marker.exists()


def test_database_fold_outside_1_to_10_is_an_error(tmp_path):
    write_database(tmp_path, database_rows([(1, 1, 11, {"NORM": 100.0})]))
    with pytest.raises(LabelFormatError, match=r"ecg_id 1 has strat_fold 11"):
        read_database(tmp_path)


# --------------------------------------------------------------------------- PTB-XL+ features


def test_pr_and_qt_are_not_swapped_whatever_the_column_order(tmp_path):
    """Guard against the PR/QT swap of a published follow-up: names typed out here, columns shuffled."""
    rows = {
        "QT_Int_Global": [400.0, 380.0],
        "P_On_Global": [1.0, 2.0],
        "PR_Int_Global": [160.0, 150.0],
        "QRS_Area_aVF": [3.0, 4.0],
        "ecg_id": [21803, 1],
        "QRS_Dur_Global": [90.0, 100.0],
        "HR__Global": [75.0, 60.0],
        "RR_Mean_Global": [800.0, 1000.0],
        "QT_Int_II": [999.0, 999.0],  # per-lead look-alikes must not be picked
        "PR_Int_V1": [999.0, 999.0],
    }
    for source, drop in [("12sl", []), ("unig", []), ("ecgdeli", ["HR__Global"])]:
        df = pd.DataFrame(rows).drop(columns=drop)
        rng = np.random.default_rng(len(source))
        df = df[list(rng.permutation(df.columns))]
        path = tmp_path / f"{source}_features.csv"
        df.to_csv(path, index=False)
        out = read_features(path, source).set_index("ecg_id")
        assert out.loc[21803, "pr"] == 160.0 and out.loc[21803, "qt"] == 400.0, source
        assert out.loc[21803, "qrs"] == 90.0 and out.loc[21803, "hr"] == pytest.approx(75.0), source
        assert out.loc[1, "pr"] == 150.0 and out.loc[1, "qt"] == 380.0, source
        assert out.loc[1, "hr"] == pytest.approx(60.0), source


def test_features_file_puts_ecg_id_mid_table_and_shuffles_rows(tmp_path):
    labels = pd.DataFrame(
        {"ecg_id": [1, 2, 3, 4, 5, 6], "hr": [60, 70, 80, 90, 100, 110.0],
         "pr": [150, 160, 170, 180, 190, 200.0], "qrs": [80, 85, 90, 95, 100, 105.0],
         "qt": [380, 390, 400, 410, 420, 430.0]}
    )  # fmt: skip
    for source in ("12sl", "ecgdeli", "unig"):
        path = write_features(tmp_path / f"{source}_features.csv", labels, source)
        raw = pd.read_csv(path)
        assert list(raw.columns).index("ecg_id") > 0
        assert raw["ecg_id"].tolist() != sorted(raw["ecg_id"])
        out = read_features(path, source)
        assert out["ecg_id"].tolist() == raw["ecg_id"].tolist()  # file order kept, joined by id later
        pd.testing.assert_frame_equal(
            out.sort_values("ecg_id").reset_index(drop=True),
            labels.astype({"ecg_id": "int64"}),
            check_dtype=False,
        )
        if source == "ecgdeli":
            assert "HR__Global" not in raw.columns and out.attrs["hr_column"] == "60000 / RR_Mean_Global"


def test_features_without_ecg_id_names_the_file(tmp_path):
    path = tmp_path / "12sl_features.csv"
    pd.DataFrame({"HR__Global": [60.0], "PR_Int_Global": [160.0], "QRS_Dur_Global": [90.0],
                  "QT_Int_Global": [400.0]}).to_csv(path, index=False)  # fmt: skip
    with pytest.raises(LabelFormatError, match=r"12sl_features\.csv.*'ecg_id'"):
        read_features(path, "12sl")


def test_features_missing_a_measurement_column_names_it(tmp_path):
    path = tmp_path / "12sl_features.csv"
    pd.DataFrame(
        {"ecg_id": [1], "HR__Global": [60.0], "QRS_Dur_Global": [90.0], "QT_Int_Global": [400.0]}
    ).to_csv(path, index=False)
    with pytest.raises(LabelFormatError, match=r"12sl_features\.csv.*PR_Int_Global"):
        read_features(path, "12sl")


def test_features_implausible_and_empty_values_become_nan(tmp_path):
    path = tmp_path / "12sl_features.csv"
    path.write_text(
        "QRS_Area_aVF,ecg_id,HR__Global,RR_Mean_Global,PR_Int_Global,QRS_Dur_Global,QT_Int_Global\n"
        "1,10,,800,160,90,400\n"  # HR empty -> 60000 / RR
        "1,11,300,200,20,90,1500\n"  # HR 300 bpm, PR 20 ms, QT 1.5 s: implausible
        "1,12,72,,,,\n"  # only HR
    )
    out = read_features(path, "12sl").set_index("ecg_id")
    assert out.loc[10, "hr"] == pytest.approx(75.0)
    assert np.isnan(out.loc[11, ["hr", "pr", "qt"]].astype(float)).all() and out.loc[11, "qrs"] == 90
    assert out.loc[12, "hr"] == 72 and np.isnan(out.loc[12, "pr"])
    assert out.attrs["implausible"] == {"hr": 1, "pr": 1, "qrs": 0, "qt": 1}


def test_features_repeated_ecg_id_is_an_error(tmp_path):
    path = tmp_path / "12sl_features.csv"
    path.write_text(
        "ecg_id,HR__Global,PR_Int_Global,QRS_Dur_Global,QT_Int_Global\n1,60,160,90,400\n1,61,161,91,401\n"
    )
    with pytest.raises(LabelFormatError, match="repeat"):
        read_features(path, "12sl")


# --------------------------------------------------------------------------- WFDB records


def test_write_record_uses_the_ptbxl_layout_and_header(tmp_path):
    base = write_record(tmp_path, 12345, signals_12(0))
    assert base == tmp_path / "records500" / "12000" / "12345_hr"
    assert record_name(1) == "records500/00000/00001_hr"
    lines = base.with_name("12345_hr.hea").read_text().splitlines()
    assert lines[0].split() == ["12345_hr", "12", "500", "5000"]
    for line, name in zip(lines[1:13], PTBXL_LEADS, strict=True):
        fields = line.split()
        assert fields[0] == "12345_hr.dat" and fields[1] == "16" and fields[-1] == name
        assert fields[2].startswith("1000") and fields[2].endswith("/mV")
        assert fields[4] == "0"  # ADC zero
    assert base.with_name("12345_hr.dat").stat().st_size == 5000 * 12 * 2


def test_write_record_is_byte_identical_to_wfdb_wrsamp(tmp_path):
    """The one writer (`write_wfdb16`, behind `write_record`) against wfdb.wrsamp itself: fractional
    microvolts (rounded), a NaN (the invalid marker -32768, also as a first sample) and other rates."""
    rng = np.random.default_rng(0)
    for fs, n in ((500, 5000), (100, 1000), (360, 3600), (1000, 10000)):
        mv = rng.uniform(-3, 3, (12, n))
        mv[7, 10] = mv[2, 0] = np.nan
        mine = write_record(tmp_path / "mine", 1234, mv, fs=fs)
        ref = tmp_path / "wfdb" / str(fs) / mine.name
        ref.parent.mkdir(parents=True)
        wfdb.wrsamp(ref.name, fs=fs, units=["mV"] * 12, sig_name=list(PTBXL_LEADS), p_signal=mv.T.copy(),
                    fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12,
                    write_dir=str(ref.parent))  # fmt: skip
        for ext in (".hea", ".dat"):
            assert mine.with_name(mine.name + ext).read_bytes() == ref.with_name(ref.name + ext).read_bytes()
        uv = rng.integers(-3000, 3000, (12, n)).astype(np.int16)  # the simulator's entry point
        write_wfdb16(mine, uv, fs)
        np.testing.assert_array_equal(wfdb.rdrecord(str(mine), physical=False).d_signal.T, uv)


def test_prediction_reads_a_record_as_the_converter_does(tmp_path):
    """One reader: predict's windows are the converter's samples. At 500 Hz the first window is
    the converter's 10 s exactly. Resampled, the converter filters the first 10.2 s and predict the
    whole record; the filter's linear edge padding reaches the first samples by ~0.01 µV, a
    hundredth of the store's 1 µV step (tolerance 0.1 µV)."""
    for ecg_id, fs, seconds in [(1, 500, 23), (2, 1000, 21), (3, 360, 10)]:
        base = write_record(tmp_path, ecg_id, signals_12(ecg_id, n=fs * seconds, fs=fs), fs=fs)
        converted, _ = read_record(base)
        windows = read_windows(base)
        assert windows.shape == (seconds // 10, 8, N_SAMPLES) and windows.dtype == np.float32
        if fs == 500:
            np.testing.assert_array_equal(windows[0], converted)
            whole, _ = read_record(base, whole=True)
            np.testing.assert_array_equal(windows[1], whole[:, N_SAMPLES : 2 * N_SAMPLES])
        else:
            np.testing.assert_allclose(windows[0], converted, rtol=0, atol=1e-4)


def test_prediction_refuses_what_the_converter_refuses(tmp_path):
    base = write_record(tmp_path, 1, signals_12(0))
    dat = base.with_name("00001_hr.dat")
    raw = bytearray(dat.read_bytes())
    raw[2 * (12 * 100 + 6)] ^= 0x40  # sample 100 of V1
    dat.write_bytes(bytes(raw))
    for read in (read_record, read_windows):
        with pytest.raises(RecordFormatError, match=r"checksum mismatch in lead\(s\) \['V1'\]"):
            read(base)


def test_write_then_read_record_within_one_microvolt(tmp_path):
    sig = signals_12(1)
    x, info = read_record(write_record(tmp_path, 1, sig))
    assert x.dtype == np.float32 and x.shape == (8, 5000)
    assert np.abs(x - sig[LEAD_INDEX]).max() <= 0.0005 + 1e-6  # 1 µV steps, rounded to nearest
    assert info["fs"] == 500 and info["resampled_from_hz"] is None and info["truncated_from_s"] is None
    assert info["checksum_verified"]


def test_real_ptb_record_loads_resampled_first_10s_by_lowercase_names():
    path = PHYSIONET / "ptb-s0010" / "s0010_re"
    x, info = read_record(path)
    assert x.shape == (8, 5000) and x.dtype == np.float32
    assert info["resampled_from_hz"] == 1000 and info["truncated_from_s"] == 38.4
    own = wfdb.rdrecord(str(path))  # wfdb's own reading at 1000 Hz
    names = [n.lower() for n in own.sig_name]
    ref = own.p_signal[0:10000:2, [names.index(lead.lower()) for lead in LEADS]].T  # same instants
    diff = np.abs(x - ref)
    assert np.median(diff) < 0.005  # mV; the anti-alias filter removes what 500 Hz cannot hold
    assert diff.max() < 0.05
    for j in range(8):  # each lead matches its namesake, not a neighbour
        assert np.corrcoef(x[j], ref[j])[0, 1] > 0.99


def test_real_mitdb_record_is_refused_naming_missing_leads():
    with pytest.raises(RecordFormatError) as err:
        read_record(PHYSIONET / "mitdb-100" / "100")
    msg = str(err.value)
    assert "100" in msg and "missing lead(s) ['I', 'II', 'V1', 'V2', 'V3', 'V4', 'V6']" in msg
    assert "['MLII', 'V5']" in msg


def test_other_sampling_rates_are_resampled_and_long_records_cut(tmp_path):
    for ecg_id, fs, seconds in [(1, 250, 10), (2, 1000, 15), (3, 360, 12)]:
        n = int(fs * seconds)
        sig = signals_12(ecg_id, n=n, fs=fs)
        x, info = read_record(write_record(tmp_path, ecg_id, sig, fs=fs))
        ref = signals_12(ecg_id, n=N_SAMPLES, fs=500)[LEAD_INDEX]  # the same sines sampled at 500 Hz
        assert info["resampled_from_hz"] == fs
        assert (info["truncated_from_s"] is None) == (seconds == 10)
        inner = slice(25, 4975)  # away from the record's own first and (for 10 s) last samples
        assert np.abs(x[:, inner] - ref[:, inner]).max() < 0.01, fs


def test_record_shorter_than_10s_is_refused(tmp_path):
    base = write_record(tmp_path, 1, signals_12(0, n=4000))
    with pytest.raises(
        RecordFormatError, match=r"00001_hr: 4000 samples at 500 Hz = 8.00 s; expected at least 10"
    ):
        read_record(base)


def test_truncated_dat_names_the_file(tmp_path):
    base = write_record(tmp_path, 1, signals_12(0))
    dat = base.with_name("00001_hr.dat")
    dat.write_bytes(dat.read_bytes()[: 60_000 + 3])
    with pytest.raises(RecordFormatError, match=r"00001_hr\.dat: unreadable signal data.*5000 samples"):
        read_record(base)


@pytest.mark.parametrize(
    "header",
    [
        "this is not a header\n",
        "",
        "00001_hr 12 500 5000\n00001_hr.dat 16 1000/mV 16 0 0 0 0 I\n",  # 12 signals declared, 1 described
        "00001_hr 12 500\n",
    ],
    ids=["garbage", "empty", "too-few-signal-lines", "no-signal-lines"],
)
def test_corrupt_header_names_the_file(tmp_path, header):
    base = write_record(tmp_path, 1, signals_12(0))
    base.with_name("00001_hr.hea").write_text(header)
    with pytest.raises(RecordFormatError, match=r"00001_hr\.hea: unreadable WFDB header"):
        read_record(base)


def test_corrupt_samples_fail_the_checksum(tmp_path):
    base = write_record(tmp_path, 1, signals_12(0))
    dat = base.with_name("00001_hr.dat")
    raw = bytearray(dat.read_bytes())
    raw[2 * (12 * 100 + 6)] ^= 0x40  # sample 100 of V1 (signal index 6)
    dat.write_bytes(bytes(raw))
    with pytest.raises(RecordFormatError, match=r"checksum mismatch in lead\(s\) \['V1'\]"):
        read_record(base)


def test_missing_files_are_file_not_found(tmp_path):
    base = write_record(tmp_path, 1, signals_12(0))
    base.with_name("00001_hr.dat").unlink()
    with pytest.raises(FileNotFoundError, match=r"00001_hr\.dat"):
        read_record(base)
    with pytest.raises(FileNotFoundError, match=r"00002_hr\.hea"):
        read_record(tmp_path / record_name(2))


def test_nan_samples_are_refused(tmp_path):
    sig = signals_12(0)
    sig[7, 1234] = np.nan  # V2: stored as WFDB's invalid marker -32768
    with pytest.raises(RecordFormatError, match=r"invalid \(NaN\) samples in lead\(s\) \{'V2': 1\}"):
        read_record(write_record(tmp_path, 1, sig))


def test_missing_lead_names_it_and_the_leads_present(tmp_path):
    base = tmp_path / "odd"
    names = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V7"]
    wfdb.wrsamp("odd", fs=500, units=["mV"] * 12, sig_name=names, p_signal=signals_12(0).T.copy(),
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12,
                write_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(RecordFormatError, match=r"odd: missing lead\(s\) \['V6'\]; the record has .*'V7'"):
        read_record(base)


def test_microvolt_units_are_converted(tmp_path):
    sig = signals_12(3)
    wfdb.wrsamp("uv", fs=500, units=["uV"] * 12, sig_name=list(PTBXL_LEADS), p_signal=sig.T * 1000,
                fmt=["16"] * 12, adc_gain=[1.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))  # fmt: skip
    x, _ = read_record(tmp_path / "uv")
    assert np.abs(x - sig[LEAD_INDEX]).max() <= 0.0005 + 1e-6


# --------------------------------------------------------------------------- conversion


# (ecg_id, patient_id, strat_fold, scp_codes); patients 100 and 101 have two ECGs each.
SPECS = [
    (1, 100, 1, {"NORM": 100.0, "SR": 0.0}),
    (2, 100, 1, {"NORM": 0.0, "SR": 0.0}),  # NORM at likelihood 0
    (3, 101, 9, {"NORM": 100.0}),
    (4, 101, 9, {"IMI": 50.0}),
    (5, 102, 10, {"NORM": 100.0}),
    (6, 103, 2, {"NORM": 80.0}),
    (7, 104, 8, {"NORM": 100.0}),
    (8, 105, 10, {"NORM": 100.0}),
    (1001, 106, 4, {"NORM": 100.0}),  # another records500 group folder
]


def feature_labels(ids) -> pd.DataFrame:
    ids = list(ids)
    return pd.DataFrame(
        {"ecg_id": ids, "hr": [50.0 + i % 50 for i in ids], "pr": [140.0 + i % 60 for i in ids],
         "qrs": [80.0 + i % 30 for i in ids], "qt": [380.0 + i % 40 for i in ids]}
    )  # fmt: skip


def make_ptbxl(
    tmp_path: Path, *, skip_features=(8,), missing_record=(7,), truncated=(6,)
) -> tuple[Path, Path]:
    root, plus = tmp_path / "ptb-xl", tmp_path / "ptb-xl-plus"
    write_database(root, database_rows(SPECS))
    for ecg_id, *_ in SPECS:
        if ecg_id in missing_record:
            continue
        base = write_record(root, ecg_id, signals_12(ecg_id))
        if ecg_id in truncated:
            dat = base.with_name(base.name + ".dat")
            dat.write_bytes(dat.read_bytes()[:1000])
    ids = [s[0] for s in SPECS if s[0] not in skip_features]
    write_features(plus / "features" / "12sl_features.csv", feature_labels(ids), "12sl")
    return root, plus


def test_convert_joins_labels_by_ecg_id_splits_by_fold_and_counts(tmp_path):
    root, plus = make_ptbxl(tmp_path)
    store, reused = convert_ptbxl(root, tmp_path / "store", features=plus)
    assert not reused
    p = store.provenance
    assert p["source"] == "ptbxl" and p["label_algorithm"] == "PTB-XL+ 12sl_features.csv (GE 12SL)"
    assert p["skipped"] == {"missing_record": 1, "malformed_record": 1}
    assert p["labels"]["no_features_row"] == 1
    assert len(store) == len(SPECS) - 2

    want = feature_labels([s[0] for s in SPECS]).set_index("ecg_id")
    fold = {s[0]: s[2] for s in SPECS}
    for split in ("train", "val", "test"):
        labels = store.split_labels(split)
        signals = store.signals(split)
        for i, rid in enumerate(labels["record_id"]):
            ecg_id = int(rid)
            assert split_for_fold(fold[ecg_id]) == split
            np.testing.assert_array_equal(signals[i], expected_uv(ecg_id))
            if ecg_id == 8:  # no features row: kept, labels NaN
                assert labels.loc[i, ["hr", "pr", "qrs", "qt"]].isna().all()
            else:
                for t in ("hr", "pr", "qrs", "qt"):
                    assert labels.loc[i, t] == pytest.approx(want.loc[ecg_id, t]), (ecg_id, t)
    # Patient-wise: every patient in exactly one split.
    assert store.labels.groupby("patient_id")["split"].nunique().max() == 1
    # ECG 6 (patient 103, truncated .dat) and 7 (patient 104, no record) were skipped.
    assert set(store.labels["patient_id"]) == {"100", "101", "102", "105", "106"}


def test_convert_twice_reuses_and_touching_inputs_rebuilds(tmp_path):
    root, plus = make_ptbxl(tmp_path)
    first, _ = convert_ptbxl(root, tmp_path / "store", features=plus)
    again, reused = convert_ptbxl(root, tmp_path / "store", features=plus / "features" / "12sl_features.csv")
    assert reused and again.key == first.key
    for f in (
        plus / "features" / "12sl_features.csv",
        root / "ptbxl_database.csv",
        root / (record_name(3) + ".dat"),
    ):
        f = Path(f)
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        store, reused = convert_ptbxl(root, tmp_path / "store", features=plus)
        assert not reused, f.name
    _, reused = convert_ptbxl(root, tmp_path / "store", features=plus)
    assert reused
    _, reused = convert_ptbxl(root, tmp_path / "store", features=plus, normal_only=True)
    assert not reused


def test_normal_only_excludes_norm_at_likelihood_0(tmp_path):
    root, plus = make_ptbxl(tmp_path, missing_record=(), truncated=())
    store, _ = convert_ptbxl(root, tmp_path / "store", features=plus, normal_only=True)
    assert sorted(store.labels["record_id"], key=int) == [
        "1",
        "3",
        "5",
        "7",
        "8",
        "1001",
    ]  # not 2 (NORM 0), 6 (80)
    assert store.provenance["selection"]["not_normal"] == 3
    store80, _ = convert_ptbxl(
        root, tmp_path / "s80", features=plus, normal_only=True, min_norm_likelihood=80
    )
    assert "6" in set(store80.labels["record_id"]) and "2" not in set(store80.labels["record_id"])


def test_limit_keeps_the_first_ecg_ids(tmp_path):
    root, plus = make_ptbxl(tmp_path, missing_record=(), truncated=())
    store, _ = convert_ptbxl(root, tmp_path / "store", features=plus, limit=3)
    assert sorted(store.labels["record_id"], key=int) == ["1", "2", "3"]


def test_a_patient_in_two_folds_is_an_error(tmp_path):
    root, plus = make_ptbxl(tmp_path, missing_record=(), truncated=())
    db = pd.read_csv(root / "ptbxl_database.csv")
    db.loc[db["ecg_id"] == 2, "strat_fold"] = 10  # patient 100 now in train and test
    db.to_csv(root / "ptbxl_database.csv", index=False)
    with pytest.raises(LabelFormatError, match=r"ptbxl_database\.csv: patient\(s\) \['100'\]"):
        convert_ptbxl(root, tmp_path / "store", features=plus)


def test_features_location(tmp_path):
    root, plus = make_ptbxl(tmp_path, missing_record=(), truncated=())
    with pytest.raises(FileNotFoundError, match="separate PhysioNet download"):
        convert_ptbxl(root, tmp_path / "store")  # PTB-XL+ not inside PTB-XL
    (root / "features").mkdir()
    (plus / "features" / "12sl_features.csv").rename(root / "features" / "12sl_features.csv")
    store, _ = convert_ptbxl(root, tmp_path / "store")  # ... unless it was put there
    assert len(store) == len(SPECS)
    with pytest.raises(ValueError, match="is the 12sl feature table but label_source is 'unig'"):
        convert_ptbxl(
            root, tmp_path / "store", features=root / "features" / "12sl_features.csv", label_source="unig"
        )
    with pytest.raises(ValueError, match="unknown label_source"):
        convert_ptbxl(root, tmp_path / "store", label_source="muse")


def test_ecgdeli_labels_take_hr_from_rr(tmp_path):
    root, plus = make_ptbxl(tmp_path, missing_record=(), truncated=(), skip_features=())
    write_features(
        plus / "features" / "ecgdeli_features.csv", feature_labels([s[0] for s in SPECS]), "ecgdeli"
    )
    store, _ = convert_ptbxl(root, tmp_path / "store", features=plus, label_source="ecgdeli")
    assert store.provenance["inputs"]["hr_column"] == "60000 / RR_Mean_Global"
    got = store.labels.set_index("record_id")
    want = feature_labels([s[0] for s in SPECS]).set_index("ecg_id")
    for ecg_id in want.index:
        assert got.loc[str(ecg_id), "hr"] == pytest.approx(want.loc[ecg_id, "hr"])
        assert got.loc[str(ecg_id), "qt"] == want.loc[ecg_id, "qt"]


def test_failure_half_way_leaves_no_store_and_keeps_the_old_one(tmp_path, monkeypatch):
    root, plus = make_ptbxl(tmp_path, missing_record=(), truncated=())
    old, _ = convert_ptbxl(root, tmp_path / "store", features=plus)
    old_labels = old.labels.copy()
    old_train = np.array(old.signals("train"))

    calls = {"n": 0}
    real_read = ptbxl.read_record

    def dies_on_fourth(path):
        calls["n"] += 1
        if calls["n"] == 4:
            raise MemoryError("out of memory")
        return real_read(path)

    monkeypatch.setattr(ptbxl, "read_record", dies_on_fourth)
    monkeypatch.setattr(ptbxl, "CHUNK_SIZE", 2)
    with pytest.raises(MemoryError):
        convert_ptbxl(root, tmp_path / "store", features=plus, rebuild=True)
    survivor = ECGStore(tmp_path / "store")
    assert survivor.key == old.key
    pd.testing.assert_frame_equal(survivor.labels, old_labels)
    np.testing.assert_array_equal(survivor.signals("train"), old_train)

    calls["n"] = 0
    with pytest.raises(MemoryError):
        convert_ptbxl(root, tmp_path / "fresh", features=plus)
    assert not (tmp_path / "fresh").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".building-" in p.name]


def test_no_readable_record_is_an_error_naming_the_reasons(tmp_path):
    root, plus = make_ptbxl(tmp_path, missing_record=[s[0] for s in SPECS], truncated=())
    with pytest.raises(RecordFormatError, match=r"no ECGs could be read.*'missing_record': 9.*00001_hr\.hea"):
        convert_ptbxl(root, tmp_path / "store", features=plus)
    assert not (tmp_path / "store").exists()


def test_two_reader_processes_give_the_same_store(tmp_path, monkeypatch):
    root, plus = make_ptbxl(tmp_path)
    monkeypatch.setattr(ptbxl, "CHUNK_SIZE", 3)
    one, _ = convert_ptbxl(root, tmp_path / "one", features=plus)
    two, _ = convert_ptbxl(root, tmp_path / "two", features=plus, workers=2)
    pd.testing.assert_frame_equal(one.labels, two.labels)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(one.signals(split), two.signals(split))
    assert two.provenance["skipped"] == one.provenance["skipped"]

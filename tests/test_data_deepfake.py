"""Tests of ecgtune.data.deepfake: the published DeepFake `.asc` + ground-truth format.

Fixtures are written by the tests themselves, in tmp_path:

* `.asc` files are made the way the generator makes them (deepfake-ecg 1.1.2,
  `deepfakeecg.generate`): tanh-shaped values x 6000 truncated to int, saved
  with `np.savetxt(fmt="%i")` as 5000 rows x 8 space-separated columns.
* ground-truth CSVs carry the published column set of the MUSE export
  (TestID, patid, avgrrinterval, VentRate, AtrialRate, pr, qrs, qt, qtcf, ...),
  times in ms; written with pandas.
* the two published layouts: `filtered_all_normals_121977_ground_truth.csv`
  plus one folder of .asc files, or train/validate/test CSVs beside
  train/, validation/, test/ folders.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ecgtune.data.deepfake as deepfake
from ecgtune.data.deepfake import (
    GROUND_TRUTH_FILE,
    convert_deepfake,
    read_asc,
    read_ground_truth,
    write_asc,
)
from ecgtune.data.errors import LabelFormatError, RecordFormatError
from ecgtune.data.store import ECGStore, assign_split_by_hash
from ecgtune.targets import LEADS, N_SAMPLES

BIG_FOLDER = "from_006_chck_2500_150k_filtered_all_normals_121977"


def generator_like(seed: int) -> np.ndarray:
    """(8, 5000) integer µV the way the Pulse2Pulse export makes them: int(tanh(x) * 6000)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_SAMPLES) / 500.0
    x = 0.8 * np.sin(2 * np.pi * 1.2 * t)[None, :] * rng.uniform(0.2, 1.0, size=(8, 1))
    x = x + 0.05 * rng.normal(size=(8, N_SAMPLES))
    return (np.tanh(x) * 6000).astype(int)  # astype(int) truncates toward zero, like torch .int()


def ground_truth_rows(patids, seed: int = 0) -> pd.DataFrame:
    """Rows with the published MUSE column set; intervals in ms."""
    rng = np.random.default_rng(seed)
    n = len(patids)
    rr = rng.uniform(600, 1000, n).round()
    return pd.DataFrame(
        {
            "TestID": np.arange(1000, 1000 + n),
            "patid": patids,
            "avgrrinterval": rr,
            "VentRate": (60000 / rr).round(),
            "AtrialRate": (60000 / rr).round(),
            "pr": rng.uniform(120, 200, n).round(),
            "qrs": rng.uniform(80, 110, n).round(),
            "qt": rng.uniform(360, 440, n).round(),
            "qtcf": rng.uniform(380, 440, n).round(),
            "paxis": rng.uniform(0, 80, n).round(),
            "raxis": rng.uniform(-30, 90, n).round(),
            "taxis": rng.uniform(0, 80, n).round(),
            "ponset": 200,
            "poffset": 300,
            "qrsonset": 400,
            "qrsoffset": 490,
            "toffset": 800,
        }
    )


def make_single_layout(root: Path, n: int = 24, missing=(), malformed=()) -> pd.DataFrame:
    """The 121,977-ECG layout in miniature: ground-truth CSV + one folder of <patid>.asc."""
    folder = root / BIG_FOLDER
    folder.mkdir(parents=True)
    patids = list(range(n))
    gt = ground_truth_rows(patids)
    gt.to_csv(root / GROUND_TRUTH_FILE, index=False)
    for i in patids:
        if i in missing:
            continue
        if i in malformed:  # one row short: 4999 x 8
            np.savetxt(folder / f"{i}.asc", generator_like(i).T[:-1], fmt="%i")
        else:
            write_asc(folder / f"{i}.asc", generator_like(i))
    return gt


# --------------------------------------------------------------------------- .asc format


def test_asc_file_is_5000_rows_of_8_space_separated_integers(tmp_path):
    sig = generator_like(1)
    path = write_asc(tmp_path / "1.asc", sig)
    lines = path.read_text().splitlines()
    assert len(lines) == N_SAMPLES
    # Row k holds sample k of leads I, II, V1..V6, in that order, single-space separated.
    assert lines[0] == " ".join(str(v) for v in sig[:, 0])
    assert lines[4999] == " ".join(str(v) for v in sig[:, 4999])


def test_write_then_read_asc_is_exact(tmp_path):
    sig = generator_like(2)
    sig[3, 17] = 32767  # int16 extremes survive
    sig[5, 18] = -32768
    out = read_asc(write_asc(tmp_path / "2.asc", sig))
    assert out.dtype == np.int16
    assert out.shape == (len(LEADS), N_SAMPLES)
    np.testing.assert_array_equal(out, sig)


def test_read_asc_matches_the_generator_recipe(tmp_path):
    """Written exactly as deepfakeecg.generate does: np.savetxt of (5000, 8) ints, fmt '%i'."""
    sig = generator_like(3)
    np.savetxt(tmp_path / "3.asc", sig.T, fmt="%i")
    np.testing.assert_array_equal(read_asc(tmp_path / "3.asc"), sig)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: np.savetxt(p, generator_like(0).T[:4999], fmt="%i"), "4999 rows x 8 columns"),
        (lambda p: np.savetxt(p, np.vstack([generator_like(0).T] * 2)[:5001], fmt="%i"), "5001 rows"),
        (lambda p: np.savetxt(p, generator_like(0).T[:, :7], fmt="%i"), "5000 rows x 7 columns"),
        (lambda p: p.write_text("1 2 3 4 5 6 7 8\n" + "1 2 3 4 5 6 7\n" * 4999), "8 whitespace-separated"),
        (lambda p: np.savetxt(p, generator_like(0).T * 0.5, fmt="%.1f"), "integers"),
        (lambda p: np.savetxt(p, np.full((5000, 8), 40000), fmt="%i"), "int16"),
        (lambda p: p.write_text(""), "empty"),
        (lambda p: p.write_bytes(b"\xff\xfe garbage"), "integers"),
    ],
    ids=["4999-rows", "5001-rows", "7-columns", "ragged", "floats", "beyond-int16", "empty", "binary"],
)
def test_malformed_asc_raises_naming_file_and_expectation(tmp_path, make, expected):
    path = tmp_path / "77.asc"
    make(path)
    with pytest.raises(RecordFormatError, match=expected) as err:
        read_asc(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)  # project errors subclass built-ins


def test_missing_asc_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="78.asc"):
        read_asc(tmp_path / "78.asc")


def test_write_asc_refuses_wrong_shape_or_floats(tmp_path):
    with pytest.raises(ValueError, match=r"\(8, 5000\)"):
        write_asc(tmp_path / "x.asc", np.zeros((5000, 8), int))
    with pytest.raises(ValueError, match="integer"):
        write_asc(tmp_path / "x.asc", np.zeros((8, 5000)))


# --------------------------------------------------------------------------- ground truth


def test_read_ground_truth_maps_muse_columns(tmp_path):
    gt = ground_truth_rows([10, 11, 12, 13])
    gt.loc[1, "pr"] = np.nan  # the published file has 3 missing PR values
    gt.loc[2, "qt"] = 900.0  # outside TARGETS["qt"].plausible
    gt.to_csv(tmp_path / "gt.csv", index=False)
    labels = read_ground_truth(tmp_path / "gt.csv")
    assert list(labels.columns) == ["record_id", "patient_id", "hr", "pr", "qrs", "qt"]
    assert labels["record_id"].tolist() == ["10", "11", "12", "13"]
    np.testing.assert_allclose(labels["hr"], 60000 / gt["avgrrinterval"])
    np.testing.assert_allclose(labels.loc[[0, 2, 3], "pr"], gt.loc[[0, 2, 3], "pr"])
    assert np.isnan(labels.loc[1, "pr"]) and np.isnan(labels.loc[2, "qt"])
    assert labels.loc[3, "qt"] == gt.loc[3, "qt"] and labels.loc[0, "qrs"] == gt.loc[0, "qrs"]
    assert labels.attrs["implausible"] == {"hr": 0, "pr": 0, "qrs": 0, "qt": 1}
    assert labels.attrs["missing"]["pr"] == 1 and labels.attrs["missing"]["qt"] == 1


def test_ground_truth_without_required_columns_names_file_and_columns(tmp_path):
    ground_truth_rows([1, 2]).drop(columns=["avgrrinterval", "qt"]).to_csv(tmp_path / "gt.csv", index=False)
    with pytest.raises(LabelFormatError, match=r"gt\.csv.*'avgrrinterval', 'qt'"):
        read_ground_truth(tmp_path / "gt.csv")


def test_ground_truth_with_text_in_a_measurement_is_an_error(tmp_path):
    gt = ground_truth_rows([1, 2]).astype({"qrs": object})
    gt.loc[1, "qrs"] = "ninety"
    gt.to_csv(tmp_path / "gt.csv", index=False)
    with pytest.raises(LabelFormatError, match=r"gt\.csv.*'qrs'.*'ninety'.*patid 2"):
        read_ground_truth(tmp_path / "gt.csv")


def test_ground_truth_with_repeated_patid_is_an_error(tmp_path):
    ground_truth_rows([1, 2, 1]).to_csv(tmp_path / "gt.csv", index=False)
    with pytest.raises(LabelFormatError, match=r"gt\.csv.*repeat"):
        read_ground_truth(tmp_path / "gt.csv")


# --------------------------------------------------------------------------- conversion


def test_convert_single_layout_streams_labels_signals_and_counts_skips(tmp_path):
    gt = make_single_layout(tmp_path / "df", n=24, missing={5}, malformed={7})
    gt.loc[3, "pr"] = np.nan
    gt.to_csv(tmp_path / "df" / GROUND_TRUTH_FILE, index=False)
    store, reused = convert_deepfake(tmp_path / "df", tmp_path / "store")
    assert not reused
    assert len(store) == 22
    p = store.provenance
    assert p["source"] == "deepfake-published"
    assert p["label_algorithm"] == "GE MUSE 12SL (published ground truth)"
    assert p["skipped"] == {"missing_asc": 1, "malformed_asc": 1}
    assert "7.asc" in p["skipped_examples"]["malformed_asc"][0]
    assert p["labels"]["missing"]["pr"] == 1
    assert p["options"]["layout"] == "single"

    # Splits are the hash split on patid; every stored ECG equals its file; labels follow the patid.
    kept = [str(i) for i in range(24) if i not in (5, 7)]
    expected_split = dict(zip(kept, assign_split_by_hash(kept), strict=True))
    for split in ("train", "val", "test"):
        labels = store.split_labels(split)
        signals = store.signals(split)
        for i, rid in enumerate(labels["record_id"]):
            assert expected_split[rid] == split
            np.testing.assert_array_equal(signals[i], generator_like(int(rid)))
            row = gt[gt["patid"] == int(rid)].iloc[0]
            assert labels.loc[i, "hr"] == pytest.approx(60000 / row["avgrrinterval"])
            assert labels.loc[i, "qt"] == row["qt"]
    assert np.isnan(store.labels.set_index("record_id").loc["3", "pr"])


def test_convert_twice_reuses_and_touching_an_input_rebuilds(tmp_path):
    make_single_layout(tmp_path / "df", n=6)
    first, reused = convert_deepfake(tmp_path / "df", tmp_path / "store")
    assert not reused
    second, reused = convert_deepfake(tmp_path / "df", tmp_path / "store")
    assert reused and second.key == first.key

    asc = tmp_path / "df" / BIG_FOLDER / "2.asc"
    st = asc.stat()
    os.utime(asc, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third, reused = convert_deepfake(tmp_path / "df", tmp_path / "store")
    assert not reused and third.key != first.key

    gt = tmp_path / "df" / GROUND_TRUTH_FILE
    gt.write_text(gt.read_text())  # same content, new mtime
    _, reused = convert_deepfake(tmp_path / "df", tmp_path / "store")
    assert not reused
    _, reused = convert_deepfake(tmp_path / "df", tmp_path / "store", limit=3)  # other options
    assert not reused
    _, reused = convert_deepfake(tmp_path / "df", tmp_path / "store", limit=3, rebuild=True)
    assert not reused


def test_convert_split_layout_keeps_published_splits(tmp_path):
    root = tmp_path / "small"
    ids = {"train": [1, 2, 3, 4], "val": [5, 6], "test": [7, 8]}
    files = {
        "train": ("train.csv", "train"),
        "val": ("validate.csv", "validation"),
        "test": ("test.csv", "test"),
    }
    for split, (csv, folder) in files.items():
        (root / folder).mkdir(parents=True)
        ground_truth_rows(ids[split], seed=len(csv)).to_csv(root / csv, index=False)
        for i in ids[split]:
            write_asc(root / folder / f"{i}.asc", generator_like(i))
    store, _ = convert_deepfake(root, tmp_path / "store")
    assert store.provenance["options"]["layout"] == "split"
    for split in ("train", "val", "test"):
        assert store.split_labels(split)["record_id"].tolist() == [str(i) for i in ids[split]]
        np.testing.assert_array_equal(store.signals(split)[0], generator_like(ids[split][0]))


def test_split_layout_missing_a_table_is_a_clear_error(tmp_path):
    (tmp_path / "train").mkdir()
    ground_truth_rows([1]).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(FileNotFoundError, match="validate.csv"):
        convert_deepfake(tmp_path, tmp_path / "store")


def test_folder_without_a_deepfake_layout_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=GROUND_TRUTH_FILE):
        convert_deepfake(tmp_path / "empty", tmp_path / "store")


def test_limit_keeps_first_rows(tmp_path):
    make_single_layout(tmp_path / "df", n=10)
    store, _ = convert_deepfake(tmp_path / "df", tmp_path / "store", limit=4)
    assert sorted(store.labels["record_id"], key=int) == ["0", "1", "2", "3"]


def test_failure_half_way_leaves_no_store_and_keeps_the_old_one(tmp_path, monkeypatch):
    make_single_layout(tmp_path / "df", n=8)
    old, _ = convert_deepfake(tmp_path / "df", tmp_path / "store")
    old_labels = old.labels.copy()
    old_train = np.array(old.signals("train"))

    calls = {"n": 0}
    real_read = deepfake.read_asc

    def dies_on_fifth(path):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk vanished")
        return real_read(path)

    monkeypatch.setattr(deepfake, "read_asc", dies_on_fifth)
    monkeypatch.setattr(deepfake, "CHUNK_SIZE", 2)  # some chunks are already in the writer
    with pytest.raises(RuntimeError, match="disk vanished"):
        convert_deepfake(tmp_path / "df", tmp_path / "store", rebuild=True)
    survivor = ECGStore(tmp_path / "store")
    assert survivor.key == old.key
    pd.testing.assert_frame_equal(survivor.labels, old_labels)
    np.testing.assert_array_equal(survivor.signals("train"), old_train)

    calls["n"] = 0
    with pytest.raises(RuntimeError):
        convert_deepfake(tmp_path / "df", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".building-" in p.name]


def test_every_asc_skipped_is_an_error_not_an_empty_store(tmp_path):
    make_single_layout(tmp_path / "df", n=3, malformed={0, 1, 2})
    with pytest.raises(
        RecordFormatError, match=r"no ECGs could be read; all 3 ECGs were skipped.*'malformed_asc': 3"
    ):
        convert_deepfake(tmp_path / "df", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_two_reader_processes_give_the_same_store(tmp_path, monkeypatch):
    make_single_layout(tmp_path / "df", n=10, malformed={4})
    monkeypatch.setattr(deepfake, "CHUNK_SIZE", 3)
    one, _ = convert_deepfake(tmp_path / "df", tmp_path / "one")
    two, _ = convert_deepfake(tmp_path / "df", tmp_path / "two", workers=2)
    pd.testing.assert_frame_equal(one.labels, two.labels)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(one.signals(split), two.signals(split))
    assert two.provenance["skipped"]["malformed_asc"] == 1


def test_asc_folder_may_be_the_root(tmp_path):
    make_single_layout(tmp_path / "df", n=4)
    for f in (tmp_path / "df" / BIG_FOLDER).iterdir():
        shutil.move(f, tmp_path / "df" / f.name)
    (tmp_path / "df" / BIG_FOLDER).rmdir()
    store, _ = convert_deepfake(tmp_path / "df", tmp_path / "store")
    assert len(store) == 4

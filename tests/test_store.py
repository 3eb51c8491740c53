"""The cached store: exact round trip, atomic commit, cache reuse and invalidation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgtune.data.store import (
    ECGStore,
    StoreError,
    StoreWriter,
    assign_split_by_hash,
    content_key,
    millivolts_to_int16,
    open_or_build,
)


def _labels(ids, splits):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "record_id": ids,
            "patient_id": ids,
            "split": splits,
            "hr": rng.uniform(50, 90, len(ids)),
            "pr": rng.uniform(120, 200, len(ids)),
            "qrs": np.r_[np.nan, rng.uniform(80, 110, len(ids) - 1)],
            "qt": rng.uniform(350, 450, len(ids)),
        }
    )


def _write(path, n=10, key="k1", seed=0):
    rng = np.random.default_rng(seed)
    sig = rng.integers(-3000, 3000, size=(n, 8, 5000), dtype=np.int16)
    ids = [f"r{i}" for i in range(n)]
    splits = ["train", "val", "test", "train", "train"] * (n // 5)
    with StoreWriter(path, {"source": "test", "key": key}) as w:
        w.append(sig[: n // 2], _labels(ids[: n // 2], splits[: n // 2]))
        w.append(sig[n // 2 :], _labels(ids[n // 2 :], splits[n // 2 :]))
    return w.store, sig, splits


def test_round_trip_is_exact_and_split_files_are_contiguous(tmp_path):
    store, sig, splits = _write(tmp_path / "s")
    reopened = ECGStore(tmp_path / "s")
    for split in ("train", "val", "test"):
        rows = [i for i, s in enumerate(splits) if s == split]
        arr = reopened.split(split)
        assert isinstance(arr.signals, np.memmap) and not arr.signals.flags.writeable
        np.testing.assert_array_equal(arr.signals, sig[rows])
        assert list(arr.record_ids) == [f"r{i}" for i in rows]
    assert reopened.provenance["split_counts"] == {"train": 6, "val": 2, "test": 2}
    # A missing label survives as NaN, not 0.
    assert np.isnan(reopened.split("train").targets[0, 2])


def test_float_millivolts_are_quantised_to_microvolts_and_clipping_counted():
    q, clipped = millivolts_to_int16(np.array([0.0014, -1.2346, 40.0, -50.0]))
    assert q.dtype == np.int16
    assert q.tolist() == [1, -1235, 32767, -32767]
    assert clipped == 2


def test_failed_build_leaves_old_store_intact_and_no_debris(tmp_path):
    _, sig, _ = _write(tmp_path / "s", key="old")
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "s", {"source": "test", "key": "new"}) as w:
            w.append(sig[:5], _labels([f"x{i}" for i in range(5)], ["train"] * 5))
            raise RuntimeError("conversion died half-way")
    assert ECGStore(tmp_path / "s").key == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_store_without_provenance_is_not_trusted(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / "provenance.json").unlink()
    with pytest.raises(StoreError, match="not a finished ecgtune store"):
        ECGStore(tmp_path / "s")


def test_truncated_signal_file_is_refused_with_its_name(tmp_path):
    _write(tmp_path / "s")
    f = tmp_path / "s" / "train.i16"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(StoreError, match="train.i16"):
        ECGStore(tmp_path / "s").signals("train")


def test_bad_chunks_are_rejected(tmp_path):
    with pytest.raises(StoreError, match=r"expected \(n, 8, 5000\)"):
        with StoreWriter(tmp_path / "s", {"key": "k"}) as w:
            w.append(np.zeros((2, 12, 5000), np.int16), _labels(["a", "b"], ["train"] * 2))
    with pytest.raises(StoreError, match="split values"):
        with StoreWriter(tmp_path / "s", {"key": "k"}) as w:
            w.append(np.zeros((2, 8, 5000), np.int16), _labels(["a", "b"], ["train", "holdout"]))
    with pytest.raises(StoreError, match="duplicate record_id"):
        with StoreWriter(tmp_path / "s", {"key": "k"}) as w:
            w.append(np.zeros((2, 8, 5000), np.int16), _labels(["a", "a"], ["train"] * 2))
    assert not (tmp_path / "s").exists()


def test_open_or_build_reuses_same_key_and_rebuilds_changed_key(tmp_path):
    calls = []

    def build(key):
        def _build(path):
            calls.append(key)
            return _write(path, key=key)[0]

        return _build

    _, reused = open_or_build(tmp_path / "s", "a", build("a"))
    assert not reused
    _, reused = open_or_build(tmp_path / "s", "a", build("a"))
    assert reused
    store, reused = open_or_build(tmp_path / "s", "b", build("b"))
    assert not reused and store.key == "b"
    assert calls == ["a", "b"]


def test_content_key_depends_on_every_part():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_hash_split_is_stable_and_close_to_fractions():
    ids = [f"id{i}" for i in range(5000)]
    s1 = assign_split_by_hash(ids)
    assert assign_split_by_hash(ids[::-1]) == s1[::-1]
    counts = pd.Series(s1).value_counts(normalize=True)
    assert abs(counts["train"] - 0.8) < 0.03 and abs(counts["val"] - 0.1) < 0.02
    with pytest.raises(ValueError, match="sum to 1"):
        assign_split_by_hash(ids, (0.5, 0.1, 0.1))

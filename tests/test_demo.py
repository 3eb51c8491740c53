"""The demo's PTB-XL data: simulated calibration ECGs read back through the real PTB-XL loader, with the
label-noise floor carried into the store, and rebuilt only when its recipe changes."""

from __future__ import annotations

import pytest

import ecgtune.data.demo as demo
from ecgtune.baselines import label_noise_floor
from ecgtune.targets import TARGET_NAMES


@pytest.fixture
def small_demo(monkeypatch):
    monkeypatch.setattr(demo, "N_PTBXL", 60)


def test_demo_ptbxl_is_simulated_with_its_floor_and_reused(tmp_path, small_demo):
    root = demo.claim_demo_root(tmp_path / "demo")
    store, reused = demo.build_demo_ptbxl(root)
    assert not reused and len(store) == 60
    assert (store.labels.groupby("patient_id")["split"].nunique() == 1).all()  # patient-wise folds
    for split in ("val", "test"):
        assert store.provenance["split_counts"][split] > 0, split  # else the floor below is not checked
        floor = label_noise_floor(store, split, TARGET_NAMES)
        assert set(floor) == set(TARGET_NAMES) and all(v > 0 for v in floor.values()), floor
    again, reused = demo.build_demo_ptbxl(root)
    assert reused and again.key == store.key


def test_a_legacy_standin_tree_in_the_demo_root_is_replaced(tmp_path, small_demo):
    root = tmp_path / "demo"
    (root / "ptbxl-format" / "records500").mkdir(parents=True)
    (root / "ptbxl-format" / ".complete").write_text("old recipe")
    root = demo.claim_demo_root(root)  # an old demo root of only demo entries is adopted
    store, _ = demo.build_demo_ptbxl(root)
    assert len(store) == 60 and not (root / "ptbxl-format" / ".complete").exists()

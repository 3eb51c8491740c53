"""The DeepFake GAN, offline: reproducible int16 µV output, and the labelled store built from it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecgtune.data.generate import (
    GenerateError,
    build_generated_store,
    checkpoint_sha256,
    generate_ecgs,
    load_generator,
)
from ecgtune.data.labellers import Labeller
from ecgtune.data.store import ECGStore
from ecgtune.targets import LEADS, N_SAMPLES, TARGET_NAMES


@pytest.fixture(scope="module")
def model():
    return load_generator("cpu")


def _generate(n, model, **kw):
    return np.concatenate(list(generate_ecgs(n, model=model, progress=False, **kw)))


def test_output_is_int16_microvolts_in_range(model):
    x = _generate(3, model, seed=0)
    assert x.dtype == np.int16
    assert x.shape == (3, len(LEADS), N_SAMPLES)
    assert np.abs(x).max() <= 6000
    # A real ECG at µV scale: R waves of hundreds of µV, not a constant or a saturated tanh.
    assert 200 < np.abs(x).max() < 6000
    assert (x.std(axis=-1) > 10).all()


def test_same_seed_same_ecgs_different_seed_different(model):
    a = _generate(2, model, seed=7)
    b = _generate(2, model, seed=7)
    c = _generate(2, model, seed=8)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 10
    # Two ECGs of one run differ too (each has its own noise stream).
    assert np.abs(a[0].astype(int) - a[1].astype(int)).mean() > 10


def test_ecg_i_does_not_depend_on_batch_size_or_start(model):
    # Float kernels block differently per batch size; after truncation to µV ECG i differs by
    # at most 1 µV (measured, torch 2.13 CPU, 64 ECGs: batch 1 vs 64 differ in 0.07% of
    # samples, by 1 µV; batch 16 vs 64 bit-identical).
    one = _generate(5, model, seed=3, batch_size=1)
    three = _generate(5, model, seed=3, batch_size=3)
    five = _generate(5, model, seed=3, batch_size=5)
    assert np.abs(one.astype(int) - three.astype(int)).max() <= 1
    assert np.abs(one.astype(int) - five.astype(int)).max() <= 1
    tail = _generate(2, model, seed=3, start=3)
    assert np.abs(tail.astype(int) - one[3:].astype(int)).max() <= 1


def test_matches_the_package_recipe(model):
    # deepfakeecg.generate(): noise uniform [-1, 1] (1, 8, 5000) -> netG -> (out * 6000).int().
    import torch

    from ecgtune.data.generate import ecg_seed

    g = torch.Generator().manual_seed(ecg_seed(0, 0))
    noise = torch.empty(1, 8, 5000).uniform_(-1, 1, generator=g)
    with torch.no_grad():
        expected = (model(noise) * 6000).int().numpy()
    np.testing.assert_array_equal(_generate(1, model, seed=0), expected.astype(np.int16))


def test_bad_arguments_raise(model):
    with pytest.raises(GenerateError, match="seed"):
        next(generate_ecgs(1, seed=-1, model=model, progress=False))
    with pytest.raises(GenerateError, match="batch_size"):
        next(generate_ecgs(1, seed=0, batch_size=0, model=model, progress=False))
    assert list(generate_ecgs(0, seed=0, model=model, progress=False)) == []


@pytest.mark.gpu
def test_cuda_reproducible_and_close_to_cpu(model):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = load_generator("cuda")
    a = np.concatenate(list(generate_ecgs(4, seed=5, batch_size=2, device="cuda", model=gpu, progress=False)))
    b = np.concatenate(list(generate_ecgs(4, seed=5, batch_size=4, device="cuda", model=gpu, progress=False)))
    cpu = _generate(4, model, seed=5)
    assert a.dtype == np.int16 and a.shape == cpu.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    # Same noise (drawn on the CPU); only float kernels (cuDNN, TF32) differ. Not yet measured.
    diff = np.abs(a.astype(int) - cpu.astype(int))
    assert diff.mean() < 5 and diff.max() < 200


class ConstantLabeller(Labeller):
    """A fast stand-in so store tests measure the store, not the delineator."""

    name = "constant"

    @property
    def version(self) -> str:
        return "1.0"

    def label_one(self, ecg_mv):
        return {"hr": 70.0, "pr": 160.0, "qrs": 90.0, "qt": 400.0}


def test_store_reused_and_rebuilt_when_inputs_change(tmp_path):
    path = tmp_path / "gen"
    kw = dict(labeller=ConstantLabeller(), workers=1, progress=False, chunk_size=10)
    store, reused = build_generated_store(path, n=24, seed=0, **kw)
    assert not reused and len(store) == 24
    assert store.provenance["counts"]["labelled"] == 24
    signals = {s: np.array(store.signals(s)) for s in ("train", "val", "test")}

    # Chunking and batch size change neither the key nor the ECGs.
    other_chunks, _ = build_generated_store(
        tmp_path / "b", n=24, seed=0, batch_size=7, **{**kw, "chunk_size": 5}
    )
    assert other_chunks.key == store.key
    for split, x in signals.items():
        assert np.abs(np.asarray(other_chunks.signals(split), dtype=int) - x).max(initial=0) <= 1

    again, reused = build_generated_store(path, n=24, seed=0, **kw)
    assert reused and again.key == store.key

    more, reused = build_generated_store(path, n=25, seed=0, **kw)
    assert not reused and len(more) == 25 and more.key != store.key
    other, reused = build_generated_store(path, n=25, seed=1, **kw)
    assert not reused and other.key != more.key
    assert other.labels["record_id"].str.startswith("gen-1-").all()


def test_store_with_the_default_labeller(tmp_path):
    # 12 ECGs keep this under ~5 s with workers=1 (neurokit2 takes ~0.2 s per ECG).
    store, reused = build_generated_store(tmp_path / "gen", n=12, seed=0, workers=1, progress=False)
    assert not reused
    p = json.loads((tmp_path / "gen" / "provenance.json").read_text())
    assert p["source"] == "deepfake-generated"
    assert p["generator"]["sha256"] == checkpoint_sha256()
    assert "deepfake-ecg 1.1.2" in p["generator"]["name"]
    assert p["label_algorithm"].startswith("neurokit2 ")
    assert p["labeller"]["name"] == "neurokit2" and p["labeller"]["version"][0].isdigit()
    assert p["counts"]["n"] == 12
    assert set(p["counts"]["failed"]) == set(TARGET_NAMES) == set(p["counts"]["dropped"])

    labels = store.labels
    assert (labels["record_id"] == labels["patient_id"]).all()
    assert labels["record_id"].str.fullmatch(r"gen-0-\d{7}").all()
    assert set(labels["split"]) <= {"train", "val", "test"}
    # GAN ECGs label almost always (100/100 measured); allow a miss.
    assert p["counts"]["labelled"] >= 11
    assert 55 < labels["hr"].median() < 90
    assert 120 < labels["pr"].median() < 200
    assert 60 < labels["qrs"].median() < 110
    assert 350 < labels["qt"].median() < 450
    store2 = ECGStore(tmp_path / "gen")
    assert store2.signals("train").dtype == np.int16

"""Labellers for ECGs without MUSE labels: known heart rates, missing-not-zero, plausibility, parallelism."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ecgtune.data import labellers as labellers_mod
from ecgtune.data.labellers import (
    LABELLERS,
    LabelError,
    Labeller,
    LabellerNotInstalledError,
    get_labeller,
)
from ecgtune.data.labels import label_ecgs
from ecgtune.targets import LEADS, N_SAMPLES, SAMPLING_RATE_HZ, TARGET_NAMES, TARGETS


def simulated(heart_rate: float, seed: int = 1) -> np.ndarray:
    """(8, 5000) float mV: neurokit2's ECGSYN at a known heart rate, noise-free, on all 8 leads.

    ECGSYN gives one lead; its timing (and so HR) is all these tests need. ~0.2 s each.
    """
    import neurokit2 as nk

    ecg = nk.ecg_simulate(
        duration=10,
        sampling_rate=SAMPLING_RATE_HZ,
        heart_rate=heart_rate,
        method="ecgsyn",
        noise=0,
        random_state=seed,
    )
    assert ecg.shape == (N_SAMPLES,)
    return np.tile(ecg, (len(LEADS), 1))


@pytest.fixture(scope="module")
def sims() -> dict[int, np.ndarray]:
    return {hr: simulated(hr) for hr in (50, 75, 100)}


def plausible(t: str, v: float) -> bool:
    lo, hi = TARGETS[t].plausible
    return lo <= v <= hi


@pytest.mark.parametrize("hr", [50, 75, 100])
def test_neurokit2_known_heart_rate(sims, hr):
    out = get_labeller("neurokit2").label_one(sims[hr])
    assert set(out) == set(TARGET_NAMES)
    assert abs(out["hr"] - hr) <= 2.0  # measured: within 0.7 bpm at 45-160 bpm
    for t in ("pr", "qrs", "qt"):
        assert plausible(t, out[t]), (t, out[t])
    # Intervals, not R-peak offsets: QRS well below PR, QT well above both.
    assert out["qrs"] < out["pr"] < out["qt"]


def test_pr_is_qrs_onset_minus_p_onset_not_r_peak(sims):
    # The PR trap: R peak − P onset runs ~40-60 ms longer than the clinical PR. On ECGSYN at
    # 75 bpm the P wave starts ~170 ms before QRS onset; R peak − P onset would be ~210 ms.
    out = get_labeller("neurokit2").label_one(sims[75])
    assert 120 <= out["pr"] <= 200


def test_tachycardia_qt_missing_not_wrong():
    # The prominence delineator looks for T within half an RR interval after R: at 160 bpm the
    # T wave is beyond it. QT must then be missing (NaN), never a made-up value; HR stays right.
    out = get_labeller("neurokit2").label_one(simulated(160))
    assert abs(out["hr"] - 160) <= 2.0
    assert math.isnan(out["qt"]) or plausible("qt", out["qt"])


def test_flat_and_noise_give_missing_not_zero_and_are_counted():
    rng = np.random.default_rng(0)
    flat = np.zeros((len(LEADS), N_SAMPLES), dtype=np.int16)
    noise = (rng.normal(0, 300, (len(LEADS), N_SAMPLES))).astype(np.int16)  # 0.3 mV white noise
    labels, counts = label_ecgs(np.stack([flat, noise]), workers=1, progress=False)
    assert labels.shape == (2, 4) and list(labels.columns) == list(TARGET_NAMES)
    assert labels.isna().all().all()  # NaN, never 0
    assert counts["n"] == 2 and counts["labelled"] == 0
    assert counts["failed"] == dict.fromkeys(TARGET_NAMES, 2)
    assert counts["dropped"] == dict.fromkeys(TARGET_NAMES, 0)
    assert counts["errors"] == 0


class FixedLabeller(Labeller):
    """Returns fixed values, one of them implausible (QRS 900 ms)."""

    name = "fixed"

    def __init__(self, values=None):
        self.values = values or {"hr": 70.0, "pr": 160.0, "qrs": 900.0, "qt": 400.0}

    @property
    def version(self) -> str:
        return "0"

    def label_one(self, ecg_mv):
        return dict(self.values)


def test_implausible_values_dropped_and_counted(monkeypatch):
    monkeypatch.setitem(LABELLERS, "fixed", FixedLabeller)
    x = np.zeros((3, len(LEADS), N_SAMPLES), dtype=np.int16)
    labels, counts = label_ecgs(x, labeller="fixed", workers=1, progress=False)
    assert labels["qrs"].isna().all()
    assert (labels["hr"] == 70).all() and (labels["qt"] == 400).all()
    assert counts["dropped"] == {"hr": 0, "pr": 0, "qrs": 3, "qt": 0}
    assert counts["failed"] == dict.fromkeys(TARGET_NAMES, 0)
    assert counts["labelled"] == 0


def test_labeller_errors_are_counted_not_fatal():
    class Broken(FixedLabeller):
        def label_one(self, ecg_mv):
            raise RuntimeError("boom")

    labels, counts = label_ecgs(
        np.zeros((2, 8, 5000), np.int16), labeller=Broken(), workers=1, progress=False
    )
    assert labels.isna().all().all()
    assert counts["errors"] == 2 and counts["failed"]["hr"] == 2
    assert "boom" in counts["error_examples"][0]


def test_wrong_keys_from_a_labeller_raise():
    bad = FixedLabeller({"hr": 70.0, "pr": 160.0, "qrs": 90.0, "qtc": 400.0})
    with pytest.raises(LabelError, match="keys"):
        label_ecgs(np.zeros((1, 8, 5000), np.int16), labeller=bad, workers=1, progress=False)


def test_input_checks():
    with pytest.raises(LabelError, match="shape"):
        label_ecgs(np.zeros((2, 12, 5000), np.int16), workers=1, progress=False)
    with pytest.raises(LabelError, match="mV"):  # float microvolts passed as millivolts
        label_ecgs(np.full((1, 8, 5000), 900.0), workers=1, progress=False)
    with pytest.raises(LabelError, match="workers"):
        label_ecgs(np.zeros((1, 8, 5000), np.int16), workers=0, progress=False)


def test_int16_microvolts_and_float_millivolts_agree(sims):
    mv = sims[75]
    uv = np.rint(mv * 1000).astype(np.int16)
    a, _ = label_ecgs(uv[None], workers=1, progress=False)
    b, _ = label_ecgs((uv / 1000.0)[None], workers=1, progress=False)
    pd.testing.assert_frame_equal(a, b)


def test_registry_and_unknown_name():
    assert set(LABELLERS) >= {"neurokit2", "ecgdeli"}
    with pytest.raises(LabelError, match="neurokit2"):
        get_labeller("nk2")
    with pytest.raises(TypeError):
        get_labeller("neurokit2", delineaton="dwt")  # misspelt option: an error, never ignored
    with pytest.raises(LabelError, match="delineation"):
        get_labeller("neurokit2", delineation="cwt")
    lab = get_labeller("neurokit2")
    d = lab.describe()
    assert d["name"] == "neurokit2" and d["version"][0].isdigit() and d["version"] in lab.algorithm


def test_ecgdeli_missing_gives_licence_and_install_hint(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake_import(name, *a, **k):
        if name == "ecgdeli":
            raise ImportError("No module named 'ecgdeli'")
        return real(name, *a, **k)

    monkeypatch.setattr(labellers_mod.importlib, "import_module", fake_import)
    with pytest.raises(LabellerNotInstalledError, match="GPL") as e:
        get_labeller("ecgdeli")
    assert "ecgtune[ecgdeli]" in str(e.value)


def test_ecgdeli_is_not_imported_by_default():
    import sys

    before = "ecgdeli" in sys.modules
    label_ecgs(np.zeros((1, 8, 5000), np.int16), workers=1, progress=False)
    get_labeller("neurokit2")
    assert ("ecgdeli" in sys.modules) == before


def test_ecgdeli_known_heart_rate(sims):
    pytest.importorskip("ecgdeli")
    out = get_labeller("ecgdeli").label_one(sims[75])
    assert abs(out["hr"] - 75) <= 2.0
    for t in ("pr", "qrs", "qt"):
        assert plausible(t, out[t]), (t, out[t])


@pytest.mark.slow
def test_parallel_equals_in_process(sims):
    # A few GAN-like inputs: the three simulations, a flat line, each twice (chunking crosses ECGs).
    x = np.stack([*sims.values(), np.zeros((8, 5000))] * 2)
    one, c1 = label_ecgs(x, workers=1, progress=False)
    two, c2 = label_ecgs(x, workers=2, progress=False)
    pd.testing.assert_frame_equal(one, two)
    for k in ("n", "labelled", "failed", "dropped", "errors"):
        assert c1[k] == c2[k]


def test_parallel_small_pool_chunking(sims):
    # Chunks smaller than the input, in-process: row order and counts survive chunking.
    from ecgtune.data.labels import LabelPool

    x = np.stack([sims[50], np.zeros((8, 5000)), sims[100]])
    with LabelPool("neurokit2", workers=1, chunk_size=2) as pool:
        labels, counts = pool.label(x, progress=False)
    assert abs(labels.loc[0, "hr"] - 50) <= 2 and abs(labels.loc[2, "hr"] - 100) <= 2
    assert labels.loc[1].isna().all()
    assert counts["n"] == 3 and counts["failed"]["hr"] == 1

"""Tests of the simulator: ecgtune.data.simulate (labels, waves), simulate_noise, simulated_ptbxl (tree).

Fixtures are made here by the code under test, from fixed seeds; nothing needs the network.
Expected values and how they were chosen:

* Wave supports: a wave's onset/offset estimated from the rendered noise-free component as the
  midpoint between the last zero and the first non-zero sample (each within 1 ms of the truth), so
  an interval (a difference of two) is within 2 ms = one sample of its label.
* neurokit2 rank agreement: thresholds sit well below what the project's default labeller
  (`NeuroKit2Labeller`, neurokit2 0.3.0 prominence delineation, p25/p75 over leads) measured on
  100 "realistic" ECGs for seeds 0-5 (see `NK_THRESHOLDS`).
* Label distributions: bounds around issue 14's PTB-XL 12SL figures (HR 70 +- 18 bpm, PR 165 +- 30,
  QRS 95 +- 20, QT 395 +- 40 ms), loose enough for a 2,000-ECG sample.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import resample_poly
from scipy.stats import spearmanr

import ecgtune.data.simulated_ptbxl as simulated_ptbxl
from ecgtune.cli import main
from ecgtune.data.ptbxl import convert_ptbxl, read_database
from ecgtune.data.ptbxl_format import PTBXL_LEADS, record_name
from ecgtune.data.simulate import (
    DOWER,
    INVERSE_DOWER,
    LAST_SAMPLE_MS,
    WAVES,
    draw_labels,
    draw_parameters,
    render,
    simulate_batch,
    twelve_leads,
)
from ecgtune.data.simulated_ptbxl import (
    EXACT_LABELS_FILE,
    FEATURES_FILE,
    assign_folds,
    assign_patients,
    quantise_12,
    scp_codes,
    write_simulated_ptbxl,
)
from ecgtune.data.simulation_file import SIMULATION_FILE, label_noise_floor
from ecgtune.targets import TARGET_NAMES, TARGETS

L_I, L_II, L_III, L_AVR, L_AVL, L_AVF = range(6)  # rows of the 12 PTB-XL leads
EIGHT = [0, 1, 6, 7, 8, 9, 10, 11]  # I, II, V1-V6 among the 12 PTB-XL leads
# Spearman of NeuroKit2Labeller vs the labels, 100 "realistic" ECGs, seeds 0-5 (min-max): HR 0.94-1.00,
# PR 0.75-0.90, QRS 0.33-0.57, QT 0.79-0.87. QRS is low because the prominence delineator cannot
# see past ~100 ms (ecgtune.data.labellers); a 20 uV threshold on the noise-free signal ranks QRS at 0.99.
NK_THRESHOLDS = {"hr": 0.8, "pr": 0.6, "qrs": 0.25, "qt": 0.6}


# --------------------------------------------------------------------------------------- generator


def test_dower_matrix_agrees_with_its_published_inverse():
    """Two independent publications (Dower 1980; Edenbrandt & Pahlm 1988): inverse x forward = I."""
    np.testing.assert_allclose(INVERSE_DOWER @ DOWER, np.eye(3), atol=0.005)


def test_same_seed_same_ecgs_other_seed_other_ecgs():
    x1, l1 = simulate_batch(6, np.random.default_rng(7))
    x2, l2 = simulate_batch(6, np.random.default_rng(7))
    x3, l3 = simulate_batch(6, np.random.default_rng(8))
    pd.testing.assert_frame_equal(l1, l2)
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == (6, 12, 5000) and x1.dtype == np.float32
    for t in TARGET_NAMES:
        assert not np.allclose(l1[t], l3[t]), t
    assert not np.allclose(x1, x3)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) sample of each run of True in a 1-D mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1


def test_global_onsets_and_offsets_of_the_waveform_are_the_labels():
    """First/last sample where any of the 12 leads of a wave's component is non-zero = the labels."""
    params = draw_parameters(120, np.random.default_rng(3))
    labels = params.labels
    assert {"lbbb", "rbbb", "ivcd"} <= set(labels["conduction"])  # wide complexes are covered too
    support = {w: (np.abs(twelve_leads(render(params, (w,)))) > 0).any(axis=1) for w in WAVES}  # (n, T)
    n_beats = n_pr = n_qt = 0
    for i in range(len(labels)):
        runs = {w: _runs(support[w][i]) for w in WAVES}
        # Midpoints between the last zero and the first non-zero sample: within 1 ms of the truth.
        on = {w: (runs[w][0] - 0.5) * 2.0 for w in WAVES}
        off = {w: (runs[w][1] + 0.5) * 2.0 for w in WAVES}
        complete = {w: (runs[w][0] > 0) & (runs[w][1] < 4999) for w in WAVES}
        for k in np.flatnonzero(complete["qrs"]):
            q_on, q_off = on["qrs"][k], off["qrs"][k]
            assert abs((q_off - q_on) - labels.qrs[i]) <= 2.0, (i, k)
            p = np.flatnonzero(complete["p"] & (off["p"] <= q_on))
            if len(p):
                assert abs((q_on - on["p"][p[-1]]) - labels.pr[i]) <= 2.0, (i, k)
                n_pr += 1
            t = np.flatnonzero(complete["t"] & (on["t"] >= q_off))
            if len(t):
                assert abs((off["t"][t[0]] - q_on) - labels.qt[i]) <= 2.0, (i, k)
                n_qt += 1
            n_beats += 1
        # HR: 60000 / mean RR of the beats whose QRS onset lies in the record.
        onsets = on["qrs"][(runs["qrs"][0] > 0) & (on["qrs"] < LAST_SAMPLE_MS)]
        assert len(onsets) == labels.n_beats[i]
        hr = 60000.0 * (len(onsets) - 1) / (onsets[-1] - onsets[0])
        assert hr == pytest.approx(labels.hr[i], abs=0.05), i
    # PR and QT are checked only where the beat's P / T wave lies whole in the record: most beats.
    assert n_beats > 1000 and n_pr > n_beats / 2 and n_qt > n_beats / 2, (n_beats, n_pr, n_qt)


def test_limb_leads_are_derived_so_iii_is_ii_minus_i():
    x, _ = simulate_batch(4, np.random.default_rng(1), noise="high")
    np.testing.assert_array_equal(x[:, L_III], x[:, L_II] - x[:, L_I])
    np.testing.assert_allclose(x[:, L_AVR], -(x[:, L_I] + x[:, L_II]) / 2, atol=1e-6)
    np.testing.assert_allclose(x[:, L_AVL], x[:, L_I] - x[:, L_II] / 2, atol=1e-6)
    np.testing.assert_allclose(x[:, L_AVF], x[:, L_II] - x[:, L_I] / 2, atol=1e-6)


def test_label_distributions_and_couplings():
    labels, _, _ = draw_labels(2000, np.random.default_rng(0))
    hr, pr, qrs, qt = (labels[t].to_numpy() for t in TARGET_NAMES)
    assert 64 <= hr.mean() <= 76 and 12 <= hr.std() <= 24 and hr.min() >= 38 and hr.max() <= 160
    assert 155 <= pr.mean() <= 175 and 20 <= pr.std() <= 40 and 0.03 <= (pr > 200).mean() <= 0.12
    assert pr.max() > 250 and pr.max() <= 320
    assert 88 <= qrs.mean() <= 102 and 12 <= qrs.std() <= 28 and 0.04 <= (qrs >= 120).mean() <= 0.15
    assert qrs.max() > 160
    assert 380 <= qt.mean() <= 410 and 30 <= qt.std() <= 50
    assert spearmanr(qt, hr)[0] < -0.5  # QT shortens as the rate rises
    assert spearmanr(pr, hr)[0] < 0  # and so does PR, a little
    for t in TARGET_NAMES:
        assert labels[t].between(*TARGETS[t].plausible).all(), t
    for t in ("pr", "qrs", "qt"):
        np.testing.assert_array_equal(labels[t], labels[t].round())  # whole ms, as 12SL reports


def test_no_trivial_feature_tells_a_label():
    """QRS amplitude does not tell QRS width, and some P waves are small."""
    params = draw_parameters(400, np.random.default_rng(5))
    qrs_amp = np.abs(twelve_leads(render(params, ("qrs",)))).max(axis=(1, 2))
    p_amp = np.abs(twelve_leads(render(params, ("p",)))).max(axis=(1, 2))
    assert abs(spearmanr(qrs_amp, params.labels.qrs)[0]) < 0.15
    assert abs(spearmanr(p_amp, params.labels.pr)[0]) < 0.15
    assert np.percentile(p_amp, 5) < 0.07 and np.percentile(p_amp, 95) < 0.35  # mV
    assert 0.5 < np.median(qrs_amp) < 2.5


def test_scp_codes_follow_the_labels():
    labels, _, _ = draw_labels(600, np.random.default_rng(2))
    codes = scp_codes(labels)
    for c, row in zip(codes, labels.itertuples(), strict=True):
        assert ("1AVB" in c) == (row.pr > 200)
        assert ("CLBBB" in c) == (row.conduction == "lbbb" and row.qrs >= 120)
        assert ("CRBBB" in c) == (row.conduction == "rbbb" and row.qrs >= 120)
        assert ("NORM" in c) == (len([k for k, v in c.items() if v == 100.0]) == 1 and c.get("NORM") == 100.0)
        assert ("SBRAD" in c) == (row.hr < 60) and ("STACH" in c) == (row.hr > 100)
    assert sum("NORM" in c for c in codes) > 0.6 * len(codes)


def test_neurokit2_rank_agrees_with_every_label():
    """An independent delineator (the project's default neurokit2 labeller) ranks ECGs like the labels."""
    from ecgtune.data.labellers import NeuroKit2Labeller

    x, labels = simulate_batch(100, np.random.default_rng(0), noise="realistic")
    labeller = NeuroKit2Labeller()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measured = pd.DataFrame([labeller.label_one(e) for e in x[:, EIGHT]])
    for t, threshold in NK_THRESHOLDS.items():
        ok = measured[t].notna()
        assert ok.mean() > 0.9, t
        rho = spearmanr(measured.loc[ok, t], labels.loc[ok, t])[0]
        assert rho > threshold, (t, rho)


def test_noise_levels():
    params = draw_parameters(8, np.random.default_rng(4))
    clean = twelve_leads(render(params))
    x, _ = simulate_batch(8, np.random.default_rng(4), noise="clean")
    np.testing.assert_array_equal(x, clean)  # clean = the rendered ECG, untouched
    noisy, _ = simulate_batch(8, np.random.default_rng(4), noise="realistic")
    rms = np.sqrt(np.mean((noisy - clean) ** 2, axis=2))  # (8, 12) mV
    assert 0.005 < np.median(rms) < 0.3
    with pytest.raises(ValueError, match="unknown noise level 'loud'"):
        simulate_batch(2, np.random.default_rng(0), noise="loud")


# ------------------------------------------------------------------------------------------- tree


def test_quantised_records_keep_iii_equal_to_ii_minus_i(tmp_path):
    out = write_simulated_ptbxl(tmp_path / "sim", 6, seed=2, noise="high", workers=1)
    for name in (record_name(3), record_name(3, low_rate=True)):
        rec = wfdb.rdrecord(str(out / name), physical=False)
        assert rec.sig_name == list(PTBXL_LEADS)
        d = rec.d_signal.astype(np.int64)  # (T, 12) µV
        np.testing.assert_array_equal(d[:, L_III], d[:, L_II] - d[:, L_I])
        assert np.abs(2 * d[:, L_AVR] + d[:, L_I] + d[:, L_II]).max() <= 1  # half-µV rounding only
        p, _ = wfdb.rdsamp(str(out / name))
        np.testing.assert_allclose(p[:, L_III], p[:, L_II] - p[:, L_I], atol=1e-9)
    x = np.random.default_rng(0).normal(0, 1, (2, 12, 50))
    uv = quantise_12(x)
    np.testing.assert_array_equal(uv[:, L_III], uv[:, L_II].astype(int) - uv[:, L_I])


def test_records100_is_the_same_ecg_anti_aliased(tmp_path):
    out = write_simulated_ptbxl(tmp_path / "sim", 4, seed=5, noise="high", workers=1)
    for ecg_id in (1, 4):
        hi, hi_info = wfdb.rdsamp(str(out / record_name(ecg_id)))
        lo, lo_info = wfdb.rdsamp(str(out / record_name(ecg_id, low_rate=True)))
        assert (hi_info["fs"], hi.shape, lo_info["fs"], lo.shape) == (500, (5000, 12), 100, (1000, 12))
        ref = resample_poly(hi, 1, 5, axis=0, padtype="line")
        inner = slice(20, 980)
        assert np.abs(lo[inner] - ref[inner]).max() <= 0.004  # mV: the 1 µV steps of both records
        assert np.abs(lo[inner] - hi[::5][inner]).max() > 0.02  # plain decimation would alias EMG/mains


def test_patients_and_folds_like_ptbxl():
    rng = np.random.default_rng(0)
    patient = assign_patients(21799, rng)
    n_patients = patient.max() + 1
    assert abs(n_patients - 18869) < 300  # PTB-XL: 21,799 ECGs of 18,869 patients
    per_patient = np.bincount(patient)
    assert per_patient.min() >= 1 and (per_patient >= 2).sum() > 1000 and per_patient.max() <= 10
    fold = assign_folds(patient, rng)
    assert pd.Series(fold).groupby(patient).nunique().max() == 1  # patient-wise
    sizes = np.bincount(fold, minlength=11)[1:]
    assert set(np.unique(fold)) == set(range(1, 11)) and sizes.max() - sizes.min() <= 2 * per_patient.max()


def test_tree_converts_like_ptbxl_and_records_the_label_noise_floor(tmp_path):
    out = write_simulated_ptbxl(tmp_path / "sim", 60, seed=1, label_noise=True, workers=1)
    info = json.loads((out / SIMULATION_FILE).read_text())
    assert info["generator_version"] >= 1 and info["seed"] == 1 and info["n"] == 60
    assert info["options"]["label_noise"] is True and info["label_noise"]["sd"]["qt"] > 0
    db = read_database(out)
    assert db.groupby("patient_id")["strat_fold"].nunique().max() == 1
    assert (db["patient_id"].value_counts() >= 2).any()  # several ECGs for some patients

    store, _ = convert_ptbxl(out, tmp_path / "store")
    assert len(store) == 60
    written = pd.read_csv(out / FEATURES_FILE).set_index("ecg_id")
    exact = pd.read_csv(out / EXACT_LABELS_FILE).set_index("ecg_id")
    got = store.labels.assign(ecg_id=store.labels["record_id"].astype(int)).set_index("ecg_id")
    columns = {"hr": "HR__Global", "pr": "PR_Int_Global", "qrs": "QRS_Dur_Global", "qt": "QT_Int_Global"}
    for t, column in columns.items():
        np.testing.assert_allclose(got[t], written.loc[got.index, column], rtol=1e-6)
    fold = db.set_index("ecg_id")["strat_fold"]
    for split, folds in (("train", range(1, 9)), ("val", [9]), ("test", [10])):
        assert len(store.split_labels(split)) == fold.isin(folds).sum()
    # The floor: mean |written - exact| per target, overall and per split; noise is there.
    floor = label_noise_floor(out)
    for t, column in columns.items():
        diff = (written.loc[exact.index, column] - exact[t]).abs()
        assert floor[t] == pytest.approx(diff.mean())
        assert label_noise_floor(out, "test")[t] == pytest.approx(diff[fold[exact.index] == 10].mean())
        assert floor[t] > 0
    assert floor["pr"] < floor["qt"]


def test_without_label_noise_the_features_are_the_exact_labels(tmp_path):
    out = write_simulated_ptbxl(tmp_path / "sim", 8, seed=3, workers=1)
    written = pd.read_csv(out / FEATURES_FILE).set_index("ecg_id").sort_index()
    exact = pd.read_csv(out / EXACT_LABELS_FILE).set_index("ecg_id").sort_index()
    np.testing.assert_array_equal(written["QT_Int_Global"], exact["qt"])
    np.testing.assert_allclose(written["HR__Global"], exact["hr"], rtol=1e-12)
    assert label_noise_floor(out) == dict.fromkeys(TARGET_NAMES, 0.0)
    with pytest.raises(FileNotFoundError, match="not a tree written by"):
        label_noise_floor(tmp_path)


def test_same_tree_whatever_the_number_of_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(simulated_ptbxl, "CHUNK_SIZE", 4)
    one = write_simulated_ptbxl(tmp_path / "one", 10, seed=9, workers=1)
    two = write_simulated_ptbxl(tmp_path / "two", 10, seed=9, workers=2)
    for name in (record_name(10) + ".dat", record_name(5, low_rate=True) + ".dat", FEATURES_FILE):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


# --------------------------------------------------------------------------------- output directory


def test_never_overwrites_what_a_user_owns(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=f"{mine}: a non-empty directory ecgtune did not write"):
        write_simulated_ptbxl(mine, 3, workers=1, rebuild=True)
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1

    out = write_simulated_ptbxl(tmp_path / "sim", 3, seed=1, workers=1)
    with pytest.raises(ValueError, match=f"{out} already holds a simulated tree; pass --rebuild"):
        write_simulated_ptbxl(out, 3, seed=2, workers=1)
    write_simulated_ptbxl(out, 3, seed=2, workers=1, rebuild=True)
    assert json.loads((out / SIMULATION_FILE).read_text())["seed"] == 2
    (out / "my-analysis.csv").write_text("x")
    with pytest.raises(ValueError, match="did not write"):
        write_simulated_ptbxl(out, 3, seed=3, workers=1, rebuild=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_simulated_ptbxl(empty, 2, workers=1) == empty and (empty / SIMULATION_FILE).is_file()


def test_a_crash_leaves_nothing_half_written(tmp_path, monkeypatch):
    old = write_simulated_ptbxl(tmp_path / "sim", 4, seed=1, workers=1)
    before = (old / SIMULATION_FILE).read_text()
    real = simulated_ptbxl._write_chunk
    calls = {"n": 0}

    def dies_on_second_chunk(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("out of memory")
        return real(*args)

    monkeypatch.setattr(simulated_ptbxl, "_write_chunk", dies_on_second_chunk)
    monkeypatch.setattr(simulated_ptbxl, "CHUNK_SIZE", 2)
    with pytest.raises(MemoryError):
        write_simulated_ptbxl(tmp_path / "fresh", 6, workers=1)
    assert not (tmp_path / "fresh").exists()
    calls["n"] = 0
    with pytest.raises(MemoryError):
        write_simulated_ptbxl(old, 6, seed=5, workers=1, rebuild=True)
    assert (old / SIMULATION_FILE).read_text() == before  # the old tree survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]  # no temporary directories left


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_simulate(tmp_path, capsys):
    out = tmp_path / "sim"
    assert (
        main(
            ["data", "simulate", "-o", str(out), "-n", "5", "--seed", "4", "--label-noise", "--workers", "1"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "label-noise floor" in printed and f"ecgtune data ptbxl {out}" in printed
    assert json.loads((out / SIMULATION_FILE).read_text())["n"] == 5
    assert main(["data", "simulate", "-o", str(out), "-n", "5", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(out) in err and "--rebuild" in err
    with pytest.raises(SystemExit):
        main(["data", "simulate", "--help"])
    help_text = capsys.readouterr().out
    for phrase in ("PR  = QRS onset - P onset", "QT  = T offset - QRS onset", "60000 / mean RR", "global"):
        assert phrase in help_text


def test_cli_output_path_is_a_file(tmp_path, capsys):
    f = tmp_path / "data.csv"
    f.write_text("a,b\n")
    assert main(["data", "simulate", "-o", str(f), "-n", "2"]) == 2
    assert "is not a directory" in capsys.readouterr().err and f.read_text() == "a,b\n"


def test_records_paths_match_the_database(tmp_path):
    out = write_simulated_ptbxl(tmp_path / "sim", 3, workers=1)
    db = pd.read_csv(out / "ptbxl_database.csv")
    for col in ("filename_hr", "filename_lr"):
        for name in db[col]:
            assert Path(out / (name + ".hea")).is_file() and Path(out / (name + ".dat")).is_file()

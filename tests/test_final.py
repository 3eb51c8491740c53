"""Final training, the once-only test evaluation, and prediction on real records."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from synthetic import synthetic_ecgs_with_labels, write_synthetic_store

from ecgtune.cli import main
from ecgtune.data.deepfake import write_asc
from ecgtune.final import RepeatedTestEvaluation, TrainingDiverged, train_final
from ecgtune.predict import RecordPrediction, format_predictions, predict_records, read_windows
from ecgtune.spec import DataSpec, ModelSpec, Spec, StageSpec, StagesSpec, StoreSpec, dump_spec

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "physionet"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("final")
    write_synthetic_store(root / "deepfake", 40, seed=0, source="deepfake")
    write_synthetic_store(root / "ptbxl", 60, seed=1, gain=1.5, source="ptbxl")
    spec = Spec(
        name="final-test",
        model=ModelSpec(name="resnet_tiny", params={"num_blocks": 1}),
        data=DataSpec(
            pretrain=StoreSpec(path=str(root / "deepfake")), finetune=StoreSpec(path=str(root / "ptbxl"))
        ),
        stages=StagesSpec(
            pretrain=StageSpec(epochs=1, batch_size=8), finetune=StageSpec(epochs=4, batch_size=8)
        ),
    )
    config = root / "best.yaml"
    dump_spec(spec, config)
    result = train_final(spec, root / "out", patience=2)
    return root, spec, config, result


def test_final_training_evaluates_the_test_fold_once_with_intervals_and_plots(trained):
    root, spec, _, result = trained
    test = json.loads((root / "out" / "test_result.json").read_text())
    assert test["statement"].startswith("First and only evaluation")
    assert test["n_ecgs"] == 12  # every 5th of 60 synthetic ECGs is in the test split
    assert set(test["targets"]) == set(spec.targets) != set()  # every target: the loop checks each
    for t, r in test["targets"].items():
        lo, hi = r["ci95"]["mae"]
        assert lo <= r["mae"] <= hi, t
        assert r["n"] == 12
        w, h = png_size(root / "out" / f"bland_altman_{t}.png")
        assert w >= 400 and h >= 300
    assert (root / "out" / "model.pt").is_file() and (root / "out" / "history.json").is_file()
    assert 2 <= result.best_epoch <= 5  # a fine-tuning epoch (pretraining is epoch 1)


def test_second_test_evaluation_of_the_same_config_is_refused_unless_forced(trained, capsys):
    root, spec, config, _ = trained
    with pytest.raises(RepeatedTestEvaluation, match="already evaluated"):
        train_final(spec, root / "again")
    assert not (root / "again").exists()  # refused before any work or output
    assert main(["train", str(config), "-o", str(root / "again")]) == 2
    assert "already evaluated" in capsys.readouterr().err
    forced = train_final(spec, root / "forced", patience=2, force=True)
    assert forced.test["statement"].startswith("Forced re-evaluation")
    ledger = (root / "ptbxl" / "test-evaluations.jsonl").read_text().splitlines()
    assert len(ledger) == 2


def test_predict_on_asc_and_on_the_real_ptb_record(trained, tmp_path):
    root, *_ = trained
    signals, _ = synthetic_ecgs_with_labels(1, seed=5)
    asc = write_asc(tmp_path / "one.asc", signals[0])
    ptb = FIXTURES / "ptb-s0010" / "s0010_re"
    windows = read_windows(ptb)
    assert windows.shape == (3, 8, 5000)  # 38.4 s at 1000 Hz -> three 10 s windows at 500 Hz
    preds = predict_records(root / "out", [str(asc), str(ptb)])
    assert [p.windows for p in preds] == [1, 3]
    for p in preds:
        assert set(p.values) == {"hr", "pr", "qrs", "qt"}
        assert all(np.isfinite(v) for v in p.values.values())


def test_predict_refuses_a_record_without_the_needed_leads(trained, capsys):
    root, *_ = trained
    mit = FIXTURES / "mitdb-100" / "100"
    assert main(["predict", str(root / "out"), str(mit)]) == 2
    err = capsys.readouterr().err
    assert "missing lead(s)" in err and "MLII" in err


def test_predict_cli_prints_json(trained, capsys):
    root, *_ = trained
    ptb = FIXTURES / "ptb-s0010" / "s0010_re"
    assert main(["predict", str(root / "out"), str(ptb), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["windows"] == 3 and {"hr", "pr", "qrs", "qt"} <= set(rows[0])


def test_bootstrap_resamples_patients_not_ecgs():
    """50 ECGs of one patient with the same error are one draw, not 50: the interval must be wide."""
    from ecgtune.final import bootstrap_ci

    errors = np.r_[np.full(50, 10.0), np.zeros(9)]
    patients = np.r_[np.zeros(50, int), np.arange(1, 10)]
    by_patient = bootstrap_ci(errors, patients, seed=0)
    by_ecg = bootstrap_ci(errors, np.arange(len(errors)), seed=0)
    mae = np.abs(errors).mean()
    for ci in (by_patient, by_ecg):
        assert ci["mae"][0] <= mae <= ci["mae"][1]
    width = {k: ci["mae"][1] - ci["mae"][0] for k, ci in (("patient", by_patient), ("ecg", by_ecg))}
    assert width["patient"] > 3 * width["ecg"], width
    assert bootstrap_ci(errors, np.zeros(len(errors)), seed=0) is None  # one patient: no interval


def test_test_report_shows_the_mean_predictor_and_patients(trained):
    root, spec, *_ = trained
    test = json.loads((root / "out" / "test_result.json").read_text())
    assert set(test["targets"]) == set(spec.targets) != set()
    assert set(test["mean_predictor"]) >= set(test["targets"])
    report = (root / "out" / "test_report.md").read_text()
    assert "mean predictor MAE" in report and "bootstrap over patients" in report
    for r in test["targets"].values():
        assert 1 <= r["patients"] <= r["n"]


def test_final_training_that_diverges_raises_before_reading_the_test_fold(tmp_path, monkeypatch):
    write_synthetic_store(tmp_path / "ptbxl", 30, seed=1, gain=1.5, source="ptbxl")

    def no_test_fold(*args, **kwargs):
        raise AssertionError("the test fold was read")

    monkeypatch.setattr("ecgtune.final.evaluate_on_test_fold", no_test_fold)
    spec = Spec(
        name="final-diverges",
        model=ModelSpec(name="resnet_tiny", params={"num_blocks": 1}),
        data=DataSpec(finetune=StoreSpec(path=str(tmp_path / "ptbxl"))),
        stages=StagesSpec(finetune=StageSpec(epochs=3, batch_size=8, lr=1e10)),
    )
    with pytest.raises(TrainingDiverged, match="diverged at epoch 1"):
        train_final(spec, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "history.json").read_text())[-1]["diverged"] is True
    dump_spec(spec, tmp_path / "spec.yaml")
    # The CLI names the error instead of printing a traceback.
    assert main(["train", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "out2")]) == 2


def test_prediction_table_names_each_record_whole():
    """Two records whose paths end alike must not print as the same name (the table once kept 40 chars)."""
    long = "/data/site-a/" + "x" * 40 + "/s0010_re"
    other = "/data/site-b/" + "x" * 40 + "/s0010_re"
    table = format_predictions(
        [RecordPrediction(r, 3, {"hr": 60.0, "qt": 400.0}) for r in (long, other)]
    ).splitlines()
    assert table[1].startswith(long + " ") and table[2].startswith(other + " ")
    assert table[0].index("windows") + len("windows") == table[1].index(" 3 ") + 2  # columns line up

"""The experiment directory's owner (`ecgtune.experiment`): the driver writes spec.yaml before any trial
runs, so a crashed or running sweep can be read with its spec; spec.yaml and summary.json written ->
read back, locally and through a URI. No Ray cluster: Tune's fit is replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from synthetic import write_trial_stores

from ecgtune.experiment import (
    SPEC_FILE,
    SUMMARY_FILE,
    read_experiment,
    sweep_summary,
    trial_summary,
    write_spec,
    write_summary,
)
from ecgtune.experiment.files import read_files
from ecgtune.spec import Spec, spec_from_dict


def sweep_spec(stores, storage) -> dict:
    return {
        "name": "startspec",
        "model": {"name": "resnet_tiny", "params": {"stem_widths": [8, 8], "block_widths": [8, 8]}},
        "targets": ["hr", "pr", "qrs", "qt"],
        "data": {"pretrain": {"path": str(stores / "deepfake")}, "finetune": {"path": str(stores / "ptbxl")}},
        "stages": {"pretrain": {"epochs": 1, "batch_size": 8}, "finetune": {"epochs": 2, "batch_size": 8}},
        "search": {
            "space": {"finetune.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}},
            "num_samples": 2,
            "asha": {"grace_period": 1, "reduction_factor": 2},
        },
        "resources": {"cpu": 1, "gpu": 0},
        "run": {"storage_path": str(storage), "max_failures": 0},
    }


class FitStarted(Exception):
    pass


def test_the_driver_writes_spec_yaml_before_the_first_trial(tmp_path, monkeypatch):
    import ecgtune.search
    from ecgtune.search import run_sweep

    stores = write_trial_stores(tmp_path / "stores")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(sweep_spec(stores, tmp_path / "runs")))
    seen = {}

    def fit(tuner):
        # What a report would read the moment Tune starts the first trial.
        (experiment,) = (tmp_path / "runs").iterdir()
        seen["files"] = sorted(p.name for p in experiment.iterdir())
        seen["spec"] = yaml.safe_load((experiment / SPEC_FILE).read_text())
        raise FitStarted

    monkeypatch.setattr(ecgtune.search, "_init_ray", lambda address: None)
    monkeypatch.setattr(ecgtune.search.tune.Tuner, "fit", fit)
    with pytest.raises(FitStarted):
        run_sweep(spec_file)
    assert SPEC_FILE in seen["files"] and SUMMARY_FILE not in seen["files"]  # the sweep has not ended
    written = Spec.model_validate(seen["spec"])
    assert written.name == "startspec" and written.total_epochs == 3
    # The store paths as the trials will read them: resolved, absolute.
    assert written.data.finetune.path == str((stores / "ptbxl").resolve())


def test_spec_and_summary_round_trip_locally_and_through_a_uri(tmp_path):
    spec = spec_from_dict(sweep_spec(tmp_path / "stores", tmp_path / "runs"))
    summary = {"sweep": "startspec", "trials": [{"trial_id": "aaaa0001", "status": "finished"}], "best": None}
    for where in (tmp_path / "local" / "exp", (tmp_path / "uri" / "exp").as_uri()):
        write_spec(str(where), spec)
        write_summary(str(where), summary)
        trial = tmp_path / ("local" if isinstance(where, Path) else "uri") / "exp" / "trial_aaaa0001"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"finetune.lr": 1e-3}))
        files = read_files(where)
        assert Spec.model_validate(files.spec) == spec and files.summary == summary
        assert not [p for p in trial.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
        assert {SPEC_FILE, SUMMARY_FILE} <= {p.name for p in trial.parent.iterdir()}
        experiment = read_experiment(where)
        assert experiment.spec == spec and experiment.ended
        assert experiment.configs == {"aaaa0001": {"finetune.lr": 1e-3}}
        # An ended sweep (summary.json): a trial that reported nothing is stopped, not running.
        assert experiment.trials.set_index("trial_id")["status"].to_dict() == {"aaaa0001": "stopped"}


# summary.json's keys, in order, as `ecgtune.sweep_results.summarize` wrote them
# before the experiment's owner.
SUMMARY_KEYS = ["sweep", "metric", "mode", "max_epochs", "wall_seconds", "trials", "epochs_reached"]
SUMMARY_KEYS += ["statuses", "best", "optuna_states", "backbones"]
TRIAL_KEYS = ["trial_id", "path", "config", "epochs", "status", "error", "objective", "best_objective"]
TRIAL_KEYS += ["ptbxl_val_mae", "node_id", "device", "time_total_s", "backbone"]


def test_summary_has_the_keys_of_a_real_sweeps_summary_json():
    """The fixture's summary.json was written by a real sweep of an older ecgtune (tests/fixtures/README.md):
    a summary made now has every key it has (and `statuses`, `device`, added since), and the same
    verdict for the same last result."""
    fixture = Path(__file__).parent / "fixtures" / "experiment"
    real = json.loads((fixture / SUMMARY_FILE).read_text())
    spec = Spec.model_validate(yaml.safe_load((fixture / SPEC_FILE).read_text()))
    (trial_dir,) = fixture.glob(f"*trial_{real['best']['trial_id']}_*")
    last = json.loads((trial_dir / "result.json").read_text().splitlines()[-1])
    config = json.loads((trial_dir / "params.json").read_text())
    entry = trial_summary(spec, last, path=str(trial_dir), config=config, error=None, best_objective=1.0)
    summary = sweep_summary(spec, [entry], None, wall_seconds=1.0)
    assert list(summary) == SUMMARY_KEYS and set(real) <= set(summary)
    assert list(entry) == TRIAL_KEYS and set(real["best"]) <= set(entry)
    same = ("trial_id", "config", "epochs", "status", "objective", "ptbxl_val_mae")
    assert {k: entry[k] for k in same} == {k: real["best"][k] for k in same}
    assert summary["best"] == entry and summary["statuses"]["finished"] == 1

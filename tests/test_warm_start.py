"""Warm start: an earlier sweep's finished and stopped trials reach the new searcher as its TPE saw them;
an incompatible earlier sweep is refused in one line naming the difference."""

from __future__ import annotations

import copy

import optuna
import pytest
from synthetic import write_synthetic_store, write_trial_stores

from ecgtune.experiment import write_spec
from ecgtune.searchers import PruneAwareOptunaSearch
from ecgtune.spec import spec_from_dict
from ecgtune.study import StudyLocation, write_study_pointer
from ecgtune.warm_start import warm_start

State = optuna.trial.TrialState


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = write_trial_stores(tmp_path_factory.mktemp("stores"))
    write_synthetic_store(root / "other-ptbxl", 30, seed=9, gain=1.5, source="ptbxl")
    return root


def spec_dict(stores) -> dict:
    return {
        "name": "warm",
        "model": {"name": "resnet_tiny", "params": {}},
        "targets": ["hr", "qt"],
        "data": {"pretrain": {"path": str(stores / "deepfake")}, "finetune": {"path": str(stores / "ptbxl")}},
        "stages": {"pretrain": {"epochs": 1, "batch_size": 8}, "finetune": {"epochs": 3, "batch_size": 8}},
        "search": {
            "space": {
                "model.num_blocks": {"type": "int", "low": 1, "high": 3},
                "finetune.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            },
            "num_samples": 4,
            "searcher": {"n_startup_trials": 3},
            "asha": {"grace_period": 1, "reduction_factor": 2},
        },
    }


def sample(trial: optuna.Trial) -> dict:
    return {
        "model.num_blocks": trial.suggest_int("model.num_blocks", 1, 3),
        "finetune.lr": trial.suggest_float("finetune.lr", 1e-4, 1e-2, log=True),
    }


def earlier_sweep(tmp_path, stores, d: dict | None = None) -> str:
    """An earlier sweep's experiment directory: spec.yaml, study.json and its journal, holding a finished,
    a stopped (at ASHA's clock 1), a diverged (FAIL) and a running trial."""
    run = tmp_path / "earlier"
    run.mkdir()
    write_spec(str(run), spec_from_dict(d or spec_dict(stores)))
    location = StudyLocation(str(run / "optuna.journal"), "earlier")
    write_study_pointer(str(run), location)
    study = optuna.create_study(
        study_name="earlier", storage=location.open(), sampler=optuna.samplers.RandomSampler(0)
    )
    finished, stopped, failed, _running = (study.ask() for _ in range(4))
    for t in (finished, stopped, failed, _running):
        sample(t)
    finished.report(1.4, 1)
    finished.report(1.1, 3)
    study.tell(finished, 1.1)
    stopped.report(2.5, 1)
    study.tell(stopped, state=State.PRUNED)
    study.tell(failed, state=State.FAIL)
    return str(run)


def test_finished_and_stopped_trials_reach_the_new_study_as_tpe_saw_them(tmp_path, stores):
    run = earlier_sweep(tmp_path, stores)
    (w,) = warm_start(spec_from_dict(spec_dict(stores)), [run])
    assert sorted(t.state.name for t in w.trials) == ["COMPLETE", "PRUNED"]
    assert w.record() == {"run": run, "study": "earlier", "trials": 2, "complete": 1, "pruned": 1}
    searcher = tpe_searcher()
    searcher.add_earlier_trials(w.trials, run)
    added = searcher._ot_study.get_trials(deepcopy=False)
    complete = next(t for t in added if t.state == State.COMPLETE)
    pruned = next(t for t in added if t.state == State.PRUNED)
    assert complete.value == 1.1 and complete.intermediate_values == {1: 1.4, 3: 1.1}
    assert pruned.intermediate_values == {1: 2.5}  # TPE ranks it by the step it was stopped at
    assert all(t.user_attrs["warm_start_from"] == run for t in added)
    # Two trials reach TPE's two start-up trials: its first suggestion is already a TPE draw, unlike a
    # cold searcher of the same seed, whose first suggestion is a start-up (independent random) draw.
    assert searcher.suggest("a") != tpe_searcher().suggest("a")


def tpe_searcher() -> PruneAwareOptunaSearch:
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=2)
    return PruneAwareOptunaSearch(
        space=sample, metric="objective", mode="min", sampler=sampler, clock="finetune_epoch"
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["search"]["space"]["finetune.lr"].update(high=1e-1), "search.space.finetune.lr is"),
        (
            lambda d: d["search"]["space"].pop("model.num_blocks"),
            "search.space.model.num_blocks is not searched there",
        ),
        (lambda d: d.update(targets=["hr", "pr", "qt"]), "targets are"),
        (lambda d: d["search"]["asha"].update(clock="all"), "ASHA counts"),
        (lambda d: d["stages"]["finetune"].update(epochs=5), "stages.finetune.epochs is 5 there"),
        (lambda d: None, None),
    ],
)
def test_an_incompatible_earlier_sweep_is_refused_in_one_line(tmp_path, stores, change, named):
    d = copy.deepcopy(spec_dict(stores))
    change(d)
    run = earlier_sweep(tmp_path, stores, d)
    ours = spec_from_dict(spec_dict(stores))
    if named is None:
        assert len(warm_start(ours, [run])[0].trials) == 2  # the same spec: compatible
        return
    with pytest.raises(ValueError) as refused:
        warm_start(ours, [run])
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"--warm-start {run}: not compatible with warm:")
    assert named in message, message


def test_other_data_is_refused(tmp_path, stores):
    d = spec_dict(stores)
    d["data"]["finetune"] = {"path": str(stores / "other-ptbxl")}
    run = earlier_sweep(tmp_path, stores, d)
    with pytest.raises(ValueError, match="data.finetune holds other ECGs there"):
        warm_start(spec_from_dict(spec_dict(stores)), [run])


def test_a_run_without_a_study_is_named(tmp_path, stores):
    with pytest.raises(FileNotFoundError, match="no spec.yaml"):
        warm_start(spec_from_dict(spec_dict(stores)), [str(tmp_path)])

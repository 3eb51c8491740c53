"""TPE with a bounded history: the same suggestions as Optuna's TPE while the study is within its
history, and beyond it a view of at most `history` trials that keeps TPE's good group whole."""

from __future__ import annotations

import optuna
import pytest

from ecgtune.bounded_tpe import BoundedTPESampler, _BoundedStudy

STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -3, 3)
    k = trial.suggest_categorical("k", ["a", "b", "c"])
    if trial.number % 5 == 4:  # some stopped trials, with a value at the step they reached
        trial.report(x * x + 2, 1)
        raise optuna.TrialPruned()
    return (x - 1) ** 2 + {"a": 0.0, "b": 0.5, "c": 1.0}[k]


def test_within_its_history_it_suggests_exactly_as_optunas_tpe():
    studies = []
    for sampler in (
        optuna.samplers.TPESampler(seed=3, n_startup_trials=5),
        BoundedTPESampler(seed=3, n_startup_trials=5, history=100),
    ):
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=60)
        studies.append([t.params for t in study.trials])
    assert studies[0] == studies[1]


def test_beyond_its_history_tpe_reads_a_bounded_view_with_its_good_group_whole():
    study = optuna.create_study(sampler=BoundedTPESampler(seed=0, n_startup_trials=5, history=60))
    study.optimize(objective, n_trials=150)
    trials = study._get_trials(deepcopy=False, states=STATES)
    view = _BoundedStudy(study, 60)._get_trials(deepcopy=False, states=STATES)
    assert len(trials) > 100 and len(view) == 60
    complete = sorted(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value
    )
    good = complete[: min(25, -(-len(trials) // 10))]  # Optuna's default gamma(n) = min(ceil(n / 10), 25)
    assert {t.number for t in good} <= {t.number for t in view}
    newest = [t.number for t in trials][-10:]
    assert set(newest) <= {t.number for t in view}
    # Other readers of the study (states other than TPE's) see every trial.
    assert len(_BoundedStudy(study, 60)._get_trials(deepcopy=False, states=None)) == len(study.trials)
    # The search still works: its best is near the optimum (x = 1, k = a).
    assert study.best_value < 0.05

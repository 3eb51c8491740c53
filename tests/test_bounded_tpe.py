"""TPE with a bounded history: the same suggestions as Optuna's TPE while the study is within its
history, and beyond it a view of at most `history` trials that keeps TPE's good group whole."""

from __future__ import annotations

import optuna
import pytest

from ecgtune.bounded_tpe import BoundedTPESampler, _BoundedStudy, _rank

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


def view_from_scratch(study: optuna.Study, history: int) -> list[int]:
    """The view as its definition states it, read off the whole study: the numbers of the best
    history / 2 finished and stopped trials and of the newest of the rest."""
    trials = study.get_trials(deepcopy=False, states=STATES)
    if len(trials) <= history:
        return [t.number for t in trials]
    best = sorted(trials, key=_rank)[: history // 2]
    chosen = {t.number for t in best}
    newest = [t for t in reversed(trials) if t.number not in chosen][: history - history // 2]
    return sorted(t.number for t in best + newest)


def test_the_view_kept_as_trials_finish_is_the_view_read_off_the_whole_study():
    """Asked and told out of order, as Tune does with 4 trials running; some trials fail, some stay
    unfinished for a while; the incremental view must equal the definition at every suggestion."""
    sampler = BoundedTPESampler(seed=1, n_startup_trials=5, history=40)
    study = optuna.create_study(sampler=sampler)
    seen: list[list[int]] = []
    original = sampler.sample_relative

    def check_then_sample(study_, trial, search_space):  # once per ask, before TPE reads the view
        view = sampler._view(study).update(study._get_trials(deepcopy=False, states=None))
        assert [t.number for t in view] == view_from_scratch(study, 40)
        # What the constant liar reads: the view and the running trials, in trial order.
        bounded = _BoundedStudy(study, sampler._view(study), trial)
        liar = bounded._get_trials(deepcopy=False, states=[*STATES, optuna.trial.TrialState.RUNNING])
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        assert [t.number for t in liar] == sorted(view_from_scratch(study, 40) + [t.number for t in running])
        seen.append([t.number for t in view])
        return original(study_, trial, search_space)

    sampler.sample_relative = check_then_sample
    running: list[optuna.Trial] = []
    for i in range(160):
        running.append(study.ask())
        x = running[-1].suggest_float("x", -3, 3)
        if len(running) < 4:
            continue
        trial = running.pop(i % 4 if i % 7 else 0)  # not the oldest first
        x = trial.params["x"]
        if trial.number % 11 == 3:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif trial.number % 5 == 4:
            trial.report(x * x + 2, 1)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, (x - 1) ** 2)
    assert len(seen) == 160 and len(seen[-1]) == 40
    assert len(study.get_trials(states=STATES)) > 120  # well beyond the history


def test_beyond_its_history_tpe_reads_a_bounded_view_with_its_good_group_whole():
    sampler = BoundedTPESampler(seed=0, n_startup_trials=5, history=60)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=150)
    trials = study._get_trials(deepcopy=False, states=STATES)
    view = sampler._view(study).update(study._get_trials(deepcopy=False, states=None))
    assert len(trials) > 100 and len(view) == 60
    complete = sorted(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value
    )
    good = complete[: min(25, -(-len(trials) // 10))]  # Optuna's default gamma(n) = min(ceil(n / 10), 25)
    assert {t.number for t in good} <= {t.number for t in view}
    newest = [t.number for t in trials][-10:]
    assert set(newest) <= {t.number for t in view}
    # Other readers of the study (states other than TPE's) see every trial.
    bounded = _BoundedStudy(study, sampler._view(study), study.trials[-1])
    assert len(bounded._get_trials(deepcopy=False, states=None)) == len(study.trials)
    # The search still works: its best is near the optimum (x = 1, k = a).
    assert study.best_value < 0.05


def test_a_restored_sampler_rebuilds_its_view_from_the_study():
    import pickle

    sampler = BoundedTPESampler(seed=0, n_startup_trials=5, history=30)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=80)
    restored = pickle.loads(pickle.dumps(sampler))
    view = restored._view(study).update(study._get_trials(deepcopy=False, states=None))
    assert [t.number for t in view] == view_from_scratch(study, 30)

"""IndexedJournalStorage answers the reads a suggestion makes as Optuna's JournalStorage does, without
walking the study."""

from __future__ import annotations

import pickle
import random

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._storage import JournalStorageReplayResult
from optuna.trial import TrialState

from ecgtune.journal_storage import IndexedJournalStorage

SPACE = {"x": FloatDistribution(1e-4, 1.0, log=True), "k": IntDistribution(1, 6)}
READS = [None, (TrialState.WAITING,), [TrialState.WAITING], (TrialState.COMPLETE, TrialState.PRUNED), ()]


def _summary(trials):
    return [(t.number, t._trial_id, t.state, t.params, t.value, t.intermediate_values, t.user_attrs)
            for t in trials]  # fmt: skip


def _same_reads(indexed, plain, study_id):
    for states in READS:
        assert _summary(indexed.get_all_trials(study_id, deepcopy=False, states=states)) == _summary(
            plain.get_all_trials(study_id, deepcopy=False, states=states)
        ), states


def _random_step(rng, study, open_trials):
    """One of what a sweep does to its study: ask, enqueue, report, tell, set an attribute."""
    op = rng.choice(["ask", "ask", "enqueue", "report", "tell", "tell", "attr"])
    if op == "ask" or not open_trials:
        open_trials.append(study.ask(fixed_distributions=SPACE))
    elif op == "enqueue":
        study.enqueue_trial({"x": rng.uniform(1e-3, 0.5), "k": rng.randint(1, 6)})
    elif op == "report":
        t = rng.choice(open_trials)
        t.report(rng.random(), rng.randint(1, 5))
    elif op == "tell":
        t = open_trials.pop(rng.randrange(len(open_trials)))
        state = rng.choice([TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
        study.tell(t, rng.random() if state == TrialState.COMPLETE else None, state=state)
    else:
        rng.choice(open_trials).set_user_attr("tune_trial_id", str(rng.random()))


@pytest.mark.parametrize("seed", [0, 1])
def test_reads_equal_optunas_own_through_a_sweep_and_another_writer(tmp_path, seed):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = str(tmp_path / "optuna.journal")
    indexed = IndexedJournalStorage(JournalFileBackend(path))
    other = optuna.storages.JournalStorage(JournalFileBackend(path))  # another process on the same file
    sampler = optuna.samplers.RandomSampler
    ours = optuna.create_study(storage=indexed, study_name="sweep", sampler=sampler(seed))
    theirs = optuna.load_study(storage=other, study_name="sweep", sampler=sampler(seed + 1))
    second = optuna.create_study(storage=other, study_name="another")  # a second study in the journal
    rng, ours_open, theirs_open, seen = random.Random(seed), [], [], set()
    for step in range(300):
        if rng.random() < 0.7:
            _random_step(rng, ours, ours_open)
        else:
            _random_step(rng, theirs if rng.random() < 0.8 else second, theirs_open if step % 2 else [])
        plain = optuna.storages.JournalStorage(JournalFileBackend(path))  # the journal read afresh
        _same_reads(indexed, plain, ours._study_id)
        seen |= {t.state for t in indexed.get_all_trials(ours._study_id, deepcopy=False)}
        if step % 25 == 0:
            _same_reads(indexed, plain, second._study_id)
    assert seen >= {
        TrialState.WAITING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING
    }  # fmt: skip


def test_unpickled_and_deleted_studies_read_as_optunas(tmp_path):
    path = str(tmp_path / "optuna.journal")
    indexed = IndexedJournalStorage(JournalFileBackend(path))
    study = optuna.create_study(storage=indexed, study_name="sweep")
    study.enqueue_trial({"x": 0.1, "k": 2})
    indexed.get_all_trials(study._study_id)  # the index is built
    restored = pickle.loads(pickle.dumps(indexed))  # Tune pickles its searcher, and the storage with it
    trial = optuna.load_study(storage=restored, study_name="sweep").ask(fixed_distributions=SPACE)
    assert trial.params == {"x": 0.1, "k": 2}  # the waiting trial, found through the restored index
    plain = optuna.storages.JournalStorage(JournalFileBackend(path))
    _same_reads(indexed, plain, study._study_id)
    _same_reads(restored, plain, study._study_id)
    optuna.delete_study(study_name="sweep", storage=indexed)
    with pytest.raises(KeyError):
        indexed.get_all_trials(study._study_id)


def test_a_suggestions_reads_do_not_walk_the_study(tmp_path, monkeypatch):
    """Once a study is indexed, the unfiltered and the WAITING reads do not call Optuna's walk over every
    trial; other reads still do."""
    indexed = IndexedJournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    study = optuna.create_study(storage=indexed, sampler=optuna.samplers.RandomSampler(0))
    for _ in range(20):
        study.tell(study.ask(fixed_distributions=SPACE), 1.0)
    indexed.get_all_trials(study._study_id)
    walks = []
    walk = JournalStorageReplayResult.get_all_trials
    monkeypatch.setattr(JournalStorageReplayResult, "get_all_trials", lambda *a: walks.append(a) or walk(*a))
    study.enqueue_trial({"x": 0.2, "k": 3})
    trial = study.ask(fixed_distributions=SPACE)  # looks for WAITING trials
    study.tell(trial, 0.5)
    assert trial.params == {"x": 0.2, "k": 3}
    assert len(indexed.get_all_trials(study._study_id, deepcopy=False)) == 21
    assert walks == []
    indexed.get_all_trials(study._study_id, states=(TrialState.COMPLETE,))
    assert len(walks) == 1

"""Search logic on toy results, without a Ray cluster: the trial-status rule, what the searcher tells
Optuna (steps on ASHA's clock, the stopping result, NaN/inf objectives), save -> restore, and ASHA
rungs that never hold a NaN/inf. The same facts through real Tune runs: tests/test_search_facts.py."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ecgtune.experiment import STATUSES, is_diverged, trial_status
from ecgtune.searchers import DivergenceAwareASHA, PruneAwareOptunaSearch
from ecgtune.sweep_callbacks import SweepGauges

State = optuna.trial.TrialState
NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def result(ft: int, objective: float, epoch: int, total: int = 4, diverged: bool = False) -> dict:
    """One epoch's result as the searcher and scheduler receive it (flattened): 1 pretraining epoch,
    then fine-tuning epochs `ft` = finetune_epoch; training_iteration = epoch."""
    return {
        "objective": objective,
        "diverged": diverged,
        "finetune_epoch": ft,
        "epoch": epoch,
        "training_iteration": epoch,
        "total_epochs": total,
    }


# ------------------------------------------------------------------------------------ trial status


@pytest.mark.parametrize(
    ("last", "kwargs", "status"),
    [
        (result(3, 1.0, 4), {}, "finished"),
        (result(1, 1.0, 2), {}, "stopped"),
        (result(1, 1.0, 2), {"ended": False}, "running"),
        (result(1, 1.0, 2), {"errored": True}, "error"),
        (result(3, 1.0, 4), {"errored": True}, "finished"),  # recovered from a failure, trained every epoch
        (result(1, NAN, 2, diverged=True), {}, "diverged"),
        (result(3, NAN, 4, diverged=True), {}, "diverged"),  # its last epoch diverged: never "finished"
        (result(1, INF, 2), {}, "diverged"),  # a non-finite objective without the flag
        (result(1, -INF, 2), {"errored": True}, "diverged"),
        (None, {}, "stopped"),
        (None, {"ended": False}, "running"),
        (None, {"errored": True}, "error"),
        ({"epoch": 2}, {"max_epochs": 2}, "finished"),  # no total_epochs: the caller's plan
        ({"epoch": 1.0, "total_epochs": 2.0, "diverged": NAN, "objective": 1.0}, {}, "stopped"),  # pandas row
    ],
)
def test_trial_status_rule(last, kwargs, status):
    assert status in STATUSES
    assert trial_status(last, **kwargs) == status


def test_is_diverged_reads_flags_and_objectives_as_results_and_table_rows_hold_them():
    assert not is_diverged(None) and not is_diverged({})
    assert not is_diverged({"objective": 1.0, "diverged": False})
    assert not is_diverged({"objective": None}) and not is_diverged({"objective": True})
    assert is_diverged({"objective": np.float32("nan")}) and is_diverged({"diverged": np.bool_(True)})


# ------------------------------------------------------------------------------------ the searcher


def space(trial: optuna.Trial) -> dict:  # module level: a saved searcher pickles it
    return {"x": trial.suggest_float("x", 0.0, 1.0)}


def searcher(clock: str = "finetune_epoch") -> PruneAwareOptunaSearch:
    s = PruneAwareOptunaSearch(
        space=space,
        metric="objective",
        mode="min",
        sampler=optuna.samplers.RandomSampler(seed=0),
        clock=clock,
    )
    return s


def frozen(s: PruneAwareOptunaSearch, trial_id: str) -> optuna.trial.FrozenTrial:
    return s._ot_study.trials[s._ot_trials[trial_id].number]


def test_stopping_result_is_reported_at_asha_clock_before_pruned(recwarn):
    s = searcher()
    s.suggest("a")
    # Pretraining: finetune_epoch 0, a zero-shot read-out that Optuna never sees.
    s.on_trial_result("a", result(0, 9.0, 1))
    s.on_trial_result("a", result(1, 2.0, 2))
    s.on_trial_result("a", result(1, 2.0, 2))  # Tune's duplicate of a last result: no repeated step
    # ASHA stops the trial on this result: Ray passes it to on_trial_complete only.
    s.on_trial_complete("a", result(2, 1.5, 3))
    t = frozen(s, "a")
    assert t.state == State.PRUNED
    assert t.intermediate_values == {1: 2.0, 2: 1.5}
    assert t.value == 1.5  # Optuna's value of a pruned trial: its last intermediate value
    assert s.told == {"stopped": 1}
    assert not [w for w in recwarn if "already reported" in str(w.message)]


def test_trial_stopped_at_its_first_rung_gets_that_value():
    s = searcher()
    s.suggest("a")
    s.on_trial_result("a", result(0, 9.0, 1))
    s.on_trial_complete("a", result(1, 3.0, 2))
    assert frozen(s, "a").intermediate_values == {1: 3.0} and frozen(s, "a").value == 3.0


def test_training_iteration_clock_reports_every_epoch():
    s = searcher(clock="training_iteration")
    s.suggest("a")
    s.on_trial_result("a", result(0, 9.0, 1))
    s.on_trial_complete("a", result(1, 3.0, 2))
    assert frozen(s, "a").intermediate_values == {1: 9.0, 2: 3.0}


def test_finished_trial_is_complete_with_its_last_objective():
    s = searcher()
    s.suggest("a")
    for ft, obj in ((0, 9.0), (1, 2.0), (2, 1.8)):
        s.on_trial_result("a", result(ft, obj, ft + 1))
    s.on_trial_complete("a", result(3, 1.7, 4))
    t = frozen(s, "a")
    assert t.state == State.COMPLETE and t.value == 1.7
    assert t.intermediate_values == {1: 2.0, 2: 1.8, 3: 1.7}


@pytest.mark.parametrize(
    "last",
    [
        result(2, NAN, 3, diverged=True),  # what TwoStageRun reports
        result(2, INF, 3),  # non-finite without the flag
        result(2, NAN, 3),
        result(3, NAN, 4, diverged=True),  # the last planned epoch diverged
        result(0, NAN, 1, diverged=True),  # diverged in pretraining, before any step
    ],
)
@pytest.mark.parametrize("seen_by_on_trial_result", [False, True])
def test_non_finite_objective_is_told_fail_and_never_reported(last, seen_by_on_trial_result):
    s = searcher()
    s.suggest("a")
    if last["finetune_epoch"] > 1:
        s.on_trial_result("a", result(1, 2.0, 2))
    if seen_by_on_trial_result:  # without ASHA, Tune passes it to on_trial_result first
        s.on_trial_result("a", last)
    s.on_trial_complete("a", last)
    t = frozen(s, "a")
    assert t.state == State.FAIL and t.value is None
    # Only the finite result before it (if any), never the non-finite one.
    assert t.intermediate_values == ({1: 2.0} if last["finetune_epoch"] > 1 else {})
    assert s.told == {"diverged": 1}


def test_no_trial_left_running_and_errors_fail():
    s = searcher()
    for tid in "abcde":
        s.suggest(tid)
    s.on_trial_complete("a", result(3, 1.0, 4))
    s.on_trial_complete("b", result(1, 1.0, 2))
    s.on_trial_complete("c", result(1, NAN, 2, diverged=True))
    s.on_trial_complete("d", error=True)  # Tune: on_trial_complete(trial_id, error=True), no result
    s.on_trial_complete("e")  # removed before it reported (sweep ended)
    states = [frozen(s, t).state for t in "abcde"]
    assert states == [State.COMPLETE, State.PRUNED, State.FAIL, State.FAIL, State.PRUNED]
    assert [frozen(s, t).user_attrs["tune_trial_id"] for t in "abcde"] == list("abcde")  # for the dashboard
    assert s.told == {"finished": 1, "stopped": 2, "diverged": 1, "error": 1}
    assert s.study_states() == {"complete": 1, "pruned": 2, "fail": 2}


def test_mode_min_ranks_the_lowest_objective_best():
    s = searcher()
    for tid, value in (("a", 2.0), ("b", 1.0), ("c", 3.0)):
        s.suggest(tid)
        s.on_trial_complete(tid, result(3, value, 4))
    assert s._ot_study.direction == optuna.study.StudyDirection.MINIMIZE
    assert s._ot_study.best_trial.number == s._ot_trials["b"].number


def test_save_restore_keeps_clock_steps_and_counts(tmp_path):
    s = searcher()
    s.suggest("a")
    s.suggest("b")
    s.on_trial_result("a", result(1, 2.0, 2))
    s.on_trial_complete("b", result(1, 1.0, 2))
    s.save(str(tmp_path / "searcher.pkl"))
    restored = PruneAwareOptunaSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.clock == "finetune_epoch" and restored.told == {"stopped": 1}
    restored.on_trial_result("a", result(1, 2.5, 2))  # an epoch repeated after a restore: first value kept
    restored.on_trial_complete("a", result(2, 1.5, 3))
    assert frozen(restored, "a").intermediate_values == {1: 2.0, 2: 1.5}
    assert restored.study_states() == {"pruned": 2}


def test_a_trial_asked_after_the_last_save_is_failed_on_the_first_suggestion_after_restore(tmp_path):
    """A killed driver asked Optuna for a trial after Tune last saved the searcher: the study (in its
    journal) holds it RUNNING, no Tune trial owns it. The resumed searcher fails it, marked, on its first
    suggestion; merely restoring (as `saved_searcher` does to read a live sweep) leaves the study alone."""
    from optuna.storages.journal import JournalFileBackend

    from ecgtune.searchers import ORPHAN_ATTR

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    s = PruneAwareOptunaSearch(
        space=space, metric="objective", mode="min", sampler=optuna.samplers.RandomSampler(seed=0),
        clock="finetune_epoch", storage=storage, study_name="sweep",
    )  # fmt: skip
    s.suggest("a")
    s.save(str(tmp_path / "searcher.pkl"))
    s.suggest("lost")  # asked, then the driver is killed before the next save
    lost = s._ot_trials["lost"].number

    def states(searcher):
        return {t.number: t.state.name for t in searcher._ot_study.get_trials(deepcopy=False)}

    reader = PruneAwareOptunaSearch()
    reader.restore(str(tmp_path / "searcher.pkl"))
    assert states(reader)[lost] == "RUNNING"

    resumed = PruneAwareOptunaSearch()
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.suggest("b")
    after = states(resumed)
    assert after[lost] == "FAIL" and resumed._ot_study.trials[lost].user_attrs[ORPHAN_ATTR] is True
    # The trials Tune owns are untouched.
    assert after[resumed._ot_trials["a"].number] == after[resumed._ot_trials["b"].number] == "RUNNING"
    assert resumed.fail_orphans() == []


# ------------------------------------------------------------------------------------ ASHA


def asha(cls=DivergenceAwareASHA):
    sched = cls(time_attr="finetune_epoch", max_t=4, grace_period=1, reduction_factor=2)
    sched.set_search_properties("objective", "min")
    return sched


def trial(tid: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid)


def rung_values(sched) -> list[float]:
    return [v for b in sched._brackets for _, recorded in b._rungs for v in recorded.values()]


def feed(sched, results: dict[str, list[dict]]) -> dict[str, str]:
    """Each trial's results in turn; the last goes to on_trial_complete, as when a trial ends."""
    decisions = {}
    for tid in results:
        sched.on_trial_add(None, trial(tid))
    for tid, rs in results.items():
        for r in rs:
            decisions[tid] = sched.on_trial_result(None, trial(tid), r)
            if decisions[tid] == TrialScheduler.STOP:
                break
        sched.on_trial_complete(None, trial(tid), r)
    return decisions


TOY = {
    "fine": [result(0, 9.0, 1), result(1, 2.0, 2), result(2, 1.5, 3)],
    "nan": [result(0, 9.0, 1), result(1, NAN, 2, diverged=True)],
    "inf": [result(0, 9.0, 1), result(1, INF, 2)],
    "nan_later": [result(0, 9.0, 1), result(1, 1.0, 2), result(2, NAN, 3)],
    "nan_pretraining": [result(0, NAN, 1, diverged=True)],
}


def test_asha_stops_diverged_trials_and_records_only_finite_values():
    sched = asha()
    decisions = feed(sched, TOY)
    assert decisions["nan"] == decisions["inf"] == decisions["nan_pretraining"] == TrialScheduler.STOP
    assert decisions["nan_later"] == TrialScheduler.STOP
    values = rung_values(sched)
    assert values and all(math.isfinite(v) for v in values)
    # The finite results are recorded, as reward = -objective (mode min), at the rung of their clock.
    rungs = {m: recorded for m, recorded in sched._brackets[0]._rungs}
    assert rungs[1] == {"fine": -2.0, "nan_later": -1.0} and rungs[2] == {"fine": -1.5}
    assert all(math.isfinite(b.cutoff(r)) for b in sched._brackets for _, r in b._rungs if r)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # numpy, on the rung holding -inf
def test_stock_asha_would_record_them():
    """What the subclass guards against: Ray's ASHA puts NaN and -inf in its rungs."""
    sched = asha(ASHAScheduler)
    feed(sched, TOY)
    assert not all(math.isfinite(v) for v in rung_values(sched))


# ------------------------------------------------------------------------------------ dashboard counts


def test_sweep_gauges_count_each_status(monkeypatch):
    gauges = SweepGauges("toy")
    monkeypatch.setattr(gauges, "_publish", lambda: None)  # Ray's Gauge needs a running Ray
    ends = {
        "finished": (result(3, 1.0, 4), gauges.on_trial_complete),
        "stopped": (result(1, 1.0, 2), gauges.on_trial_complete),
        "diverged": (result(1, NAN, 2, diverged=True), gauges.on_trial_complete),
        "error": (result(1, 1.0, 2), gauges.on_trial_error),
    }
    for last, end in ends.values():
        t = SimpleNamespace(last_result=last)
        gauges.on_trial_start(0, [], t)
        end(0, [], t)
    assert gauges.counts == {"running": 0, "finished": 1, "stopped": 1, "diverged": 1, "error": 1}


# ------------------------------------------------------------------------------- ASHA after a resume


def _asha(experiment_path=None) -> DivergenceAwareASHA:
    asha = DivergenceAwareASHA(
        time_attr="finetune_epoch",
        max_t=8,
        grace_period=1,
        reduction_factor=2,
        experiment_path=experiment_path,
    )
    asha.set_search_properties("objective", "min")
    return asha


def _decide(asha, events, stopped: set[str], processed: list | None = None) -> list[str]:
    """ASHA's decision on each event of the trials it has not stopped (a stopped trial reports no more)."""
    out = []
    for trial_id, result in events:
        if trial_id in stopped:
            continue
        trial = SimpleNamespace(trial_id=trial_id)
        if trial_id not in asha._trial_info:
            asha.on_trial_add(None, trial)
        decision = asha.on_trial_result(None, trial, result)
        out.append(decision)
        if processed is not None:
            processed.append((trial_id, result))
        if decision == TrialScheduler.STOP:
            stopped.add(trial_id)
    return out


def test_a_resumed_asha_decides_as_the_uninterrupted_one_on_the_same_results(tmp_path):
    """A sweep interrupted after its trials passed rungs: the resumed ASHA, rebuilt from the experiment's
    result files, takes every later decision the uninterrupted ASHA took; one with empty rungs (Tune's
    own restore) does not."""
    import json

    rng = np.random.default_rng(3)
    level = {f"t{i}": float(rng.uniform(1, 2)) for i in range(12)}
    events = []  # 12 trials, 8 fine-tuning epochs each, started two epochs apart, in report order
    for step in range(40):
        for i in range(12):
            ft = step - 2 * i
            if 1 <= ft <= 8:
                objective = level[f"t{i}"] + 1.0 / ft + 0.05 * float(rng.standard_normal())
                events.append((f"t{i}", {"trial_id": f"t{i}", "finetune_epoch": ft, "objective": objective}))
    cut = len(events) // 2
    uninterrupted = _asha()
    stopped: set[str] = set()
    before: list = []
    _decide(uninterrupted, events[:cut], stopped, before)
    stopped_at_cut = set(stopped)
    later = _decide(uninterrupted, events[cut:], stopped)
    assert TrialScheduler.STOP in later, "the test needs decisions after the interruption"

    # The interrupted sweep's experiment directory: what every trial reported before the cut.
    exp = tmp_path / "exp"
    reported: dict[str, list[dict]] = {}
    for trial_id, result in before:
        reported.setdefault(trial_id, []).append(result)
    for trial_id, results in reported.items():
        d = exp / f"trial_{trial_id}"
        d.mkdir(parents=True)
        (d / "params.json").write_text("{}")
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results))
    resumed = _asha(str(exp))
    assert _decide(resumed, events[cut:], set(stopped_at_cut)) == later
    assert resumed.rebuilt.startswith(f"rungs rebuilt from {len(before)} results")
    # Tune's own restore: the same scheduler with empty rungs decides otherwise.
    assert _decide(_asha(), events[cut:], set(stopped_at_cut)) != later


class _Trial:  # hashable, as Tune's trials are (the live ones are a set)
    def __init__(self, trial_id: str, status: str):
        self.trial_id, self.status = trial_id, status


class _Controller:
    """What a scheduler sees of Tune's controller: every trial in the order added, and the live ones."""

    def __init__(self, trials: list, every_trial_readable: bool = True):
        self.trials, self.readable = trials, every_trial_readable

    def get_trials(self) -> list:
        assert self.readable, "read every trial of the sweep"
        return self.trials

    def get_live_trials(self) -> set:
        return {t for t in self.trials if t.status not in ("TERMINATED", "ERROR")}


def test_asha_chooses_as_tunes_fifo_but_reads_only_the_live_trials():
    from ray.tune.schedulers import FIFOScheduler

    rng = np.random.default_rng(0)
    for _ in range(200):
        trials = [
            _Trial(f"t{i}", str(rng.choice(
                ["TERMINATED", "TERMINATED", "ERROR", "RUNNING", "PENDING", "PAUSED"])))
            for i in range(int(rng.integers(0, 12)))
        ]  # fmt: skip
        sched = asha()
        for t in trials:
            sched.on_trial_add(None, t)
        stock = FIFOScheduler().choose_trial_to_run(_Controller(trials))
        assert sched.choose_trial_to_run(_Controller(trials, every_trial_readable=False)) is stock

"""Checks shared by the sweep tests: what Optuna, ASHA and the dashboard counts were told, against what
each trial reported (Tune's result.json, one line per `tune.report`) and the driver's summary."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest

from ecgtune.experiment import STATUSES, is_diverged
from ecgtune.searchers import ORPHAN_ATTR

OPTUNA_STATE = {
    "finished": optuna.trial.TrialState.COMPLETE,
    "stopped": optuna.trial.TrialState.PRUNED,
    "diverged": optuna.trial.TrialState.FAIL,
    "error": optuna.trial.TrialState.FAIL,
}


def reported(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    """trial_id -> the results it reported (result.json lines, NaN included), oldest first."""
    out = {}
    for f in sorted(Path(experiment).glob("*/result.json")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[-1]["trial_id"]] = rows
    return out


def judged(rows: list[dict[str, Any]], clock: str) -> dict[int, float]:
    """What the trial reported on ASHA's clock: step -> objective, for steps >= 1 with a finite
    objective, the first value of a step reported twice (an epoch re-run after a restore)."""
    out: dict[int, float] = {}
    for r in rows:
        if r[clock] >= 1 and not is_diverged(r):
            out.setdefault(int(r[clock]), r["objective"])
    return out


def check_optuna(searcher, summary: dict[str, Any], rows: dict[str, list[dict]], clock: str) -> None:
    """Every Optuna trial holds, on ASHA's clock, exactly the objectives its Tune trial reported; a
    stopped trial's last intermediate value (and so its value) is the result ASHA stopped it on."""
    study = searcher._ot_study
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert (searcher.metric, searcher.mode, searcher.clock) == ("objective", "min", clock)
    trials = {t["trial_id"]: t for t in summary["trials"]}
    # searcher._ot_trials (Ray's map from Tune trial id to Optuna trial) is the only link between the two.
    assert set(searcher._ot_trials) == set(trials)
    for tid, ot_trial in searcher._ot_trials.items():
        frozen = study.trials[ot_trial.number]
        status, rs = trials[tid]["status"], rows[tid]
        last = rs[-1]
        assert frozen.state == OPTUNA_STATE[status], (tid, status, frozen.state)
        assert frozen.intermediate_values == pytest.approx(judged(rs, clock), rel=1e-6), tid
        assert all(math.isfinite(v) for v in frozen.intermediate_values.values())
        if status == "stopped":
            assert frozen.last_step == last[clock], (tid, frozen.intermediate_values, last[clock])
            assert frozen.intermediate_values[frozen.last_step] == pytest.approx(last["objective"], rel=1e-6)
            assert frozen.value == pytest.approx(last["objective"], rel=1e-6)
        elif status == "finished":
            assert frozen.value == pytest.approx(last["objective"], rel=1e-6)
            assert frozen.value == pytest.approx(trials[tid]["objective"], rel=1e-6)
        else:
            assert frozen.value is None
    running = [t.number for t in study.trials if not t.state.is_finished()]
    assert not running, f"Optuna trials left unfinished: {running}"


def check_asha(scheduler, rows: dict[str, list[dict]], clock: str) -> None:
    """ASHA counted `clock`, minimised `objective` (reward = -objective), and each rung holds, for
    every trial that reached it, the objective of its first result there — never a diverged one."""
    assert (scheduler._time_attr, scheduler._metric, scheduler._mode) == (clock, "objective", "min")
    assert scheduler._metric_op == -1.0
    for bracket in scheduler._brackets:
        for milestone, recorded in bracket._rungs:
            assert all(math.isfinite(v) for v in recorded.values()), (milestone, recorded)
            expected = {}
            for tid, rs in rows.items():
                first = next((r for r in rs if r[clock] >= milestone), None)
                if first is not None and not is_diverged(first):
                    expected[tid] = -first["objective"]
            assert recorded == pytest.approx(expected, rel=1e-6), milestone


def check_counts(summary: dict[str, Any], searcher, gauges=None) -> Counter:
    """One count per status, the same in the summary, the searcher's verdicts, the Optuna study and the
    dashboard series."""
    statuses = Counter(t["status"] for t in summary["trials"])
    assert summary["statuses"] == {s: statuses[s] for s in STATUSES}
    assert Counter(searcher.told) == statuses
    optuna_states = Counter(OPTUNA_STATE[s].name.lower() for s in statuses.elements())
    # A driver killed between asking Optuna and Tune saving the searcher leaves a trial no Tune trial ran;
    # the resumed searcher tells it FAIL (PruneAwareOptunaSearch.fail_orphans).
    orphans = [t for t in searcher._ot_study.trials if t.user_attrs.get(ORPHAN_ATTR)]
    assert all(t.state.name == "FAIL" for t in orphans)
    optuna_states["fail"] += len(orphans)
    optuna_states = +optuna_states
    assert searcher.study_states() == dict(optuna_states)
    assert summary["optuna_states"] == dict(optuna_states)
    if gauges is not None:
        assert gauges.counts == statuses and gauges.counts["running"] == 0
    return statuses

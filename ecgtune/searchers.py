"""The search algorithm and the scheduler of a sweep: Optuna's sampler told what ASHA saw, and ASHA that
keeps diverged trials out of its rungs and rebuilds them on resume. The driver (`ecgtune.search`) builds
them from a spec; `ecgtune.backbone_search` extends the searcher to share pretrained backbones.

What a trial's last result means (finished / stopped / diverged / error) is
`ecgtune.experiment.trial_status`'s decision, here as everywhere.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
from ray.tune.experiment import Trial
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from ecgtune.experiment import ExperimentError, finite_objective, is_diverged, trial_status
from ecgtune.experiment.files import read_files
from ecgtune.spec import ASHASpec


def asha_clock(asha: ASHASpec | None) -> str:
    """The result key ASHA counts rungs on (its time_attr); the searcher reports Optuna's steps on it too.

    finetune_epoch stays 0 through pretraining, so no rung is reached there (spec.ASHASpec.clock).
    Without ASHA, Tune's own clock.
    """
    return "finetune_epoch" if asha is not None and asha.clock == "finetune" else TRAINING_ITERATION


# User attribute of an Optuna trial asked by a driver that was killed before Tune saved the searcher.
ORPHAN_ATTR = "asked_before_interruption"


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells TPE what ASHA saw, on ASHA's clock.

    - Steps: each intermediate value is reported at `result[clock]`, the key ASHA counts rungs on
      (`finetune_epoch` or `training_iteration`: `asha_clock`), not at stock OptunaSearch's
      `training_iteration`. Only steps >= 1 are reported, each once. Under the finetune clock every
      pretraining epoch has finetune_epoch 0, so their objectives (the pretrained model read out
      zero-shot on PTB-XL) never reach Optuna: ASHA ignores them too (no rung at 0), their rank
      agreement with the final objective was measured at 0.04-0.08 (docs/benchmarks.md part 4), and
      Optuna would keep only the first of several values at one step (it ignores repeats with a
      warning). A trial's intermediate values are then on the clock, and from the epochs, ASHA judges.
    - Stopped trials: Ray passes the result ASHA stops a trial on only to `on_trial_complete`
      (tune_controller.py `_process_trial_result`), so it is reported here before the trial is told
      PRUNED; Optuna takes a pruned trial's value from its last intermediate value, so that value is
      the one ASHA stopped it on. TPE ranks pruned trials by their last step, later first, then by that
      value (optuna/samplers/_tpe/sampler.py `_get_pruned_trial_score`; a pruned trial without any
      intermediate value ranks last), so steps on ASHA's clock rank them by the rung they reached.
    - Finished trials are told COMPLETE with their last objective; diverged ones (a NaN/inf loss or
      objective: `ecgtune.experiment.is_diverged`) and errored ones FAIL, with no value, so TPE never ranks
      them; a non-finite value is never reported.

    Whether a trial finished, was stopped, diverged or failed is `ecgtune.experiment.trial_status`'s
    decision; `told` counts the verdicts by that status.
    """

    def __init__(self, *args: Any, clock: str = TRAINING_ITERATION, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.told: Counter[str] = Counter()
        self._last_step: dict[str, int] = {}  # per trial, the last step reported to Optuna

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._orphans_checked = False

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not getattr(self, "_orphans_checked", True):
            self.fail_orphans()
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:  # the Tune trial id on the Optuna trial: optuna-dashboard shows it
            self._ot_trials[trial_id].set_user_attr("tune_trial_id", trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:
            super().on_trial_result(trial_id, result)  # warns and ignores it
            return
        self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict) -> None:
        """The result's objective at its step on ASHA's clock, if both are usable and the step is new."""
        value, step = finite_objective(result), result.get(self.clock)
        if is_diverged(result) or value is None or step is None or step < 1:
            return
        # A step already reported: the duplicate of a trial's last result that Tune passes when the trial
        # function returns, or an epoch repeated after a restore from a checkpoint.
        if step <= self._last_step.get(trial_id, 0):
            return
        self._ot_trials[trial_id].report(value, int(step))
        self._last_step[trial_id] = int(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not result or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            # No result (an error, or a trial removed before it reported), a second completion, or an
            # unknown trial: stock OptunaSearch tells FAIL / PRUNED without a value, or warns.
            super().on_trial_complete(trial_id, result=result, error=error)
            self.told[trial_status(result, errored=error)] += 1
            return
        status = trial_status(result, errored=error)
        value = finite_objective(result)
        ot_trial, states = self._ot_trials[trial_id], optuna.trial.TrialState
        if status == "finished" and value is not None:
            self._report(trial_id, result)
            self._ot_study.tell(ot_trial, value, state=states.COMPLETE)
        elif status in ("diverged", "error"):
            self._ot_study.tell(ot_trial, state=states.FAIL)
        else:
            self._report(trial_id, result)  # the result ASHA stopped it on
            self._ot_study.tell(ot_trial, state=states.PRUNED)
        self._completed_trials.add(trial_id)
        self.told[status] += 1

    def fail_orphans(self) -> list[int]:
        """Tell FAIL every Optuna trial left RUNNING that no Tune trial owns, and return their numbers.

        The study lives in a storage (`ecgtune.study`) that a killed driver kept writing after Tune last
        saved this searcher: a trial asked in between is in the study but not in the restored
        `_ot_trials`, and Tune suggests it again under a new trial. Left RUNNING, TPE would count it
        forever and optuna-dashboard would show it running. Called on the first suggestion after a
        restore (not in `restore` itself: `saved_searcher` restores a live sweep's searcher to read it)."""
        self._orphans_checked = True
        owned = {t.number for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        orphans = [t for t in running if t.number not in owned]
        for frozen in orphans:
            # Marked, so optuna-dashboard and the summary say why a trial failed that no Tune trial ran.
            optuna.trial.Trial(self._ot_study, frozen._trial_id).set_user_attr(ORPHAN_ATTR, True)
            self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
        return [t.number for t in orphans]

    def add_earlier_trials(self, trials: list, run: str) -> None:
        """Trials of an earlier, compatible sweep (`ecgtune.warm_start`), as its TPE saw them: TPE learns
        from them and counts them toward its start-up trials. Each records where it came from."""
        for trial in trials:
            trial.set_user_attr("warm_start_from", run)
        self._ot_study.add_trials(trials)

    def study_states(self) -> dict[str, int]:
        return dict(Counter(t.state.name.lower() for t in self._ot_study.get_trials(deepcopy=False)))


class DivergenceAwareASHA(ASHAScheduler):
    """ASHA that stops a diverged trial at once, never puts its result in a rung, and rebuilds its rungs
    when a sweep resumes.

    A diverged epoch's result still carries the metric key (Tune 2.60 raises for a result without it:
    `TuneController._validate_result_metrics`), as NaN, beside `diverged: True`. Stock ASHA would
    record -NaN (or -inf) in the rung, where `np.nanpercentile` skips NaN, returns NaN for an all-NaN
    rung (no trial is ever stopped there again) and is dragged by inf.

    Resume: `Tuner.restore` brings the searcher back but builds the scheduler anew from tuner.pkl, with
    empty rungs, so a resumed ASHA would stop trials against rungs that forgot every trial from before
    the interruption. This one reads, before its first decision, every result the experiment directory
    (`experiment_path`) holds and records them in its rungs as they were recorded when reported: each
    trial's first result at or past a milestone. With one bracket (every shipped sweep) that is exactly
    the state the uninterrupted scheduler had; with several, Tune's random bracket of each earlier trial
    is not recorded anywhere, so the rungs are left as Tune leaves them (`rebuilt` says so).
    """

    def __init__(self, *args: Any, experiment_path: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.experiment_path = experiment_path
        self.rebuilt: str | None = None  # what the rebuild found, for the driver's log
        self._rebuild_pending = True
        self._added: dict[str, int] = {}  # trial id -> the order Tune added it in

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled from tuner.pkl by Tuner.restore: rebuild before deciding anything.
        self.__dict__.update(state)
        self.__dict__.setdefault("_added", {})  # a tuner.pkl written before it existed
        self._rebuild_pending = True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._rebuild_once()
        self._added.setdefault(trial.trial_id, len(self._added))
        super().on_trial_add(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """Tune's FIFO choice, the first trial added that is pending, else the first paused one, read off
        the live trials only: the stock choice scans every trial of the sweep twice per driver step, a
        cost that grows with the sweep (docs/benchmarks.md part 4, "The driver at scale")."""
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            ready = [t for t in live if t.status == status]
            if ready:
                return min(ready, key=lambda t: self._added.get(t.trial_id, math.inf))
        return None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if is_diverged(result):
            return TrialScheduler.STOP
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if is_diverged(result):
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)

    def _rebuild_once(self) -> None:
        if not self._rebuild_pending:
            return
        self._rebuild_pending = False
        if not self.experiment_path:
            return
        try:
            trials = read_files(self.experiment_path).trials
        except (FileNotFoundError, ExperimentError):
            return  # a new sweep: nothing reported yet
        self.rebuild(trial.results for trial in trials)
        print(f"ASHA, resumed: {self.rebuilt}", flush=True)  # the driver's console, once

    def rebuild(self, histories: Iterable[list[dict]]) -> None:
        """Record every trial's results (each a list in the order reported) in the rungs."""
        trials = results = 0
        if len(self._brackets) != 1:
            self.rebuilt = (
                f"rungs not rebuilt: {len(self._brackets)} brackets (Tune's bracket of each trial is lost)"
            )
            return
        (bracket,) = self._brackets
        for history in histories:
            usable = [r for r in history if not is_diverged(r) and self._time_attr in r and self._metric in r]
            if not usable:
                continue
            trial = SimpleNamespace(trial_id=str(usable[0].get("trial_id")))
            trials += 1
            for r in usable:
                results += 1
                bracket.on_result(trial, r[self._time_attr], self._metric_op * r[self._metric])
        held = sum(len(recorded) for _, recorded in bracket._rungs)
        self.rebuilt = f"rungs rebuilt from {results} results of {trials} trials ({held} rung values)"


def saved_searcher(experiment_path: str) -> PruneAwareOptunaSearch | None:
    """The searcher as Tune saved it in a local experiment directory (searcher-state-*.pkl, written after
    every trial and at the end of `fit()`); None for a URI or a run without a searcher (variants)."""
    if "://" in experiment_path or not any(Path(experiment_path).glob("searcher-state-*.pkl")):
        return None
    searcher = PruneAwareOptunaSearch()
    searcher.restore_from_dir(experiment_path)
    return searcher

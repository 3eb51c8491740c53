"""The search algorithm and the scheduler of a sweep: Optuna TPE (or random search) told what ASHA saw,
and ASHA that keeps diverged trials out of its rungs. The driver (`ecgtune.search`) builds them with
`make_searcher` and `make_scheduler`.

What a trial's last result means (finished / stopped / diverged / error) is
`ecgtune.experiment.trial_status`'s decision, here as everywhere.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ecgtune.experiment import EPOCH, MODE, OBJECTIVE, finite_objective, is_diverged, trial_status
from ecgtune.sampler import make_sampler
from ecgtune.spec import ASHASpec, BackboneSharingSpec, SearcherSpec, Spec, asha_max_t


def make_searcher(
    spec: Spec,
    study_name: str,
    searcher_class: type[PruneAwareOptunaSearch] | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> PruneAwareOptunaSearch:
    """The searcher of a sweep with a search section: its sampler (`make_sampler_of`) over its space,
    sharing backbones when the spec says so (`search.backbones`). `storage`: where the Optuna study
    lives (None: in memory). `searcher_class` (same constructor) is for benchmarks that compare
    searchers (bench/replay.py)."""
    search = spec.search
    if search is None:
        raise ValueError(f"spec {spec.name!r} has no search section")
    cls = searcher_class or (
        BackboneSharingSearch if search.backbones is not None else PruneAwareOptunaSearch
    )
    kwargs: dict[str, Any] = {}
    if issubclass(cls, BackboneSharingSearch):
        kwargs = {
            "sharing": search.backbones,
            "pretrain_epochs": spec.pretrain_epochs,
            "first_rung": search.asha.grace_period if search.asha is not None else 1,
        }
    return cls(
        space=make_sampler(spec),  # picklable (resume re-loads the searcher)
        metric=OBJECTIVE,
        mode=MODE,
        sampler=make_sampler_of(search.searcher),
        study_name=study_name,  # unique per sweep run
        storage=storage,
        clock=asha_clock(search.asha),
        **kwargs,
    )


def make_sampler_of(searcher: SearcherSpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a spec's `search.searcher` names, seeded."""
    if searcher.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=searcher.seed)
    if searcher.algorithm == "gp":
        return optuna.samplers.GPSampler(seed=searcher.seed, n_startup_trials=searcher.n_startup_trials)
    return optuna.samplers.TPESampler(
        seed=searcher.seed, n_startup_trials=searcher.n_startup_trials, multivariate=searcher.multivariate
    )


def make_scheduler(spec: Spec) -> DivergenceAwareASHA | None:
    """ASHA on the spec's clock; None without `search.asha`."""
    asha = spec.search.asha if spec.search is not None else None
    if asha is None:
        return None
    return DivergenceAwareASHA(
        time_attr=asha_clock(asha),  # metric and mode: TuneConfig's (Tune refuses both)
        max_t=asha_max_t(spec, asha),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
        brackets=asha.brackets,
    )


def asha_clock(asha: ASHASpec | None) -> str:
    """The result key ASHA counts rungs on (its time_attr); the searcher reports Optuna's steps on it too.

    finetune_epoch stays 0 through pretraining, so no rung is reached there (spec.ASHASpec.clock).
    Without ASHA, Tune's own clock.
    """
    return "finetune_epoch" if asha is not None and asha.clock == "finetune" else TRAINING_ITERATION


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

    def study_states(self) -> dict[str, int]:
        return dict(Counter(t.state.name.lower() for t in self._ot_study.get_trials(deepcopy=False)))


class DivergenceAwareASHA(ASHAScheduler):
    """ASHA that stops a diverged trial at once and never puts its result in a rung.

    A diverged epoch's result still carries the metric key (Tune 2.60 raises for a result without it:
    `TuneController._validate_result_metrics`), as NaN, beside `diverged: True`. Stock ASHA would
    record -NaN (or -inf) in the rung, where `np.nanpercentile` skips NaN, returns NaN for an all-NaN
    rung (no trial is ever stopped there again) and is dragged by inf.
    """

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if is_diverged(result):
            return TrialScheduler.STOP
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if is_diverged(result):
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)


# ------------------------------------------------------------------------------------ sharing backbones
# A searcher that makes trials share pretrained backbones: TPE at two levels.
#
# Sharing pays only when suggestions repeat backbones, and a continuous space never repeats one by chance.
# So, with a spec's `search.backbones` (`ecgtune.spec.BackboneSharingSpec`), each suggestion first decides
# between a new backbone and one already pretrained:
# - a new backbone: Optuna samples every key, as without sharing; the trial pretrains and writes the entry;
# - a pretrained backbone: its model.* and pretrain.* values are fixed (Optuna's `enqueue_trial` with those
#   parameters only), and the sampler draws the fine-tuning keys given them; the trial loads the entry and
#   starts at fine-tuning epoch 1 (`ecgtune.reuse`).
#
# A backbone is offered again only after a trial reported its last pretraining epoch (the entry is written
# before that report: `ecgtune.trial`), so the searcher holds back instead of making trials wait; and only
# while fewer than `trials_per_backbone` trials have used it. Which one: `pick` "oldest" fills every
# backbone in turn; "best" takes the backbone whose trials scored best at ASHA's first rung, if it ranks in
# the best `top_fraction` of backbones scored so far, and otherwise draws a new backbone.
#
# Everything else (what TPE and ASHA are told) is `PruneAwareOptunaSearch`'s.

BACKBONE_PREFIXES = ("model.", "pretrain.")


def is_backbone_param(name: str) -> bool:
    """A search-space key (or Optuna's name for it, `model.num_heads|model.embed_dim=128`) that the
    backbone key covers."""
    return name.startswith(BACKBONE_PREFIXES)


class BackboneSharingSearch(PruneAwareOptunaSearch):
    """`PruneAwareOptunaSearch` that reuses pretrained backbones (see the module docstring).

    `pretrain_epochs`: epochs a trial pretrains (its backbone is stored after the last). `first_rung`:
    the clock value at which trials are scored (ASHA's grace period). `groups` holds, per backbone (its
    parameters as JSON), the trials that used it, whether it is pretrained, failed, and its score.
    """

    def __init__(
        self,
        *args: Any,
        sharing: BackboneSharingSpec | None = None,
        pretrain_epochs: int = 0,
        first_rung: int = 1,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.sharing = sharing or BackboneSharingSpec()
        self.pretrain_epochs = pretrain_epochs
        self.first_rung = first_rung
        self.groups: dict[str, dict[str, Any]] = {}
        self.trial_group: dict[str, str] = {}
        self.reuses = 0  # suggestions that reused a pretrained backbone

    # ---------------------------------------------------------------------------------- suggesting

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        group = self._pick()
        if group is not None and trial_id not in self._ot_trials:
            self._ot_study.enqueue_trial(group["params"], skip_if_exists=False)
        config = super().suggest(trial_id)
        if config is None or config == Searcher.FINISHED or trial_id not in self._ot_trials:
            return config
        params = {k: v for k, v in self._ot_trials[trial_id].params.items() if is_backbone_param(k)}
        gid = json.dumps(params, sort_keys=True, default=str)
        entry = self.groups.setdefault(
            gid,
            {
                "params": params,
                "trials": [],
                "ready": False,
                "failed": False,
                "score": None,
                "order": len(self.groups),
            },
        )
        if entry["trials"]:
            self.reuses += 1
        entry["trials"].append(trial_id)
        self.trial_group[trial_id] = gid
        return config

    def _pick(self) -> dict[str, Any] | None:
        """The pretrained backbone the next trial reuses, or None for a new one."""
        share = self.sharing
        open_groups = [
            g
            for g in self.groups.values()
            if g["ready"] and not g["failed"] and len(g["trials"]) < share.trials_per_backbone
        ]
        if not open_groups:
            return None
        if share.pick == "oldest":
            return min(open_groups, key=lambda g: g["order"])
        scored = [g["score"] for g in self.groups.values() if g["score"] is not None and not g["failed"]]
        candidates = [g for g in open_groups if g["score"] is not None]
        if not candidates:
            return None
        best = min(candidates, key=lambda g: g["score"])
        better = sum(s < best["score"] for s in scored)
        return best if better < max(1.0, share.top_fraction * len(scored)) else None

    # ------------------------------------------------------------------------------------ learning

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._learn(trial_id, result)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result:
            self._learn(trial_id, result)
        super().on_trial_complete(trial_id, result=result, error=error)

    def _learn(self, trial_id: str, result: dict) -> None:
        """A backbone is pretrained once a trial reported its last pretraining epoch (finite); failed if
        its pretraining diverged; scored by its trials' best objective at the first rung."""
        group = self.groups.get(self.trial_group.get(trial_id, ""))
        if group is None:
            return
        epoch = result.get(EPOCH) or 0
        if is_diverged(result):
            if epoch <= self.pretrain_epochs:
                group["failed"] = True
            return
        if epoch >= self.pretrain_epochs:
            group["ready"] = True
        value = finite_objective(result)
        if result.get(self.clock) == self.first_rung and value is not None:
            group["score"] = value if group["score"] is None else min(group["score"], value)

    def sharing_summary(self) -> dict[str, Any]:
        """For summary.json: backbones drawn, trials that reused one, trials per backbone."""
        per = [len(g["trials"]) for g in self.groups.values()]
        return {
            "backbones": len(self.groups),
            "reusing_trials": self.reuses,
            "trials_per_backbone": {str(n): per.count(n) for n in sorted(set(per))},
        }


def saved_searcher(experiment_path: str) -> PruneAwareOptunaSearch | None:
    """The searcher as Tune saved it in a local experiment directory (searcher-state-*.pkl, written after
    every trial and at the end of `fit()`); None for a URI or a run without a searcher (variants)."""
    if "://" in experiment_path or not any(Path(experiment_path).glob("searcher-state-*.pkl")):
        return None
    searcher = PruneAwareOptunaSearch()
    searcher.restore_from_dir(experiment_path)
    return searcher

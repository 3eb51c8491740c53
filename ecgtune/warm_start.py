"""Warm start: a new sweep's searcher starts from what earlier sweeps learned.

    ecgtune sweep SPEC --warm-start RUN [RUN ...]

Each RUN is an earlier sweep's experiment directory. Its Optuna study (`ecgtune.study`) holds every trial
as TPE saw it: finished trials COMPLETE with their final objective, trials ASHA stopped PRUNED with their
values on ASHA's clock up to the one they were stopped on (`ecgtune.searchers.PruneAwareOptunaSearch`).
Those two kinds are added to the new study as they are, so TPE ranks them exactly as the earlier sweep's
TPE did, and counts them toward its start-up trials. Failed, diverged and running trials are not added.

Only compatible sweeps: the same search space (keys and distributions), the same objective (targets and
ASHA's clock, which the stopped trials' steps count), the same fine-tuning length, and the same data (the
pretraining and fine-tuning stores' content keys). Anything else is refused in one line naming the
difference. No Ray here: the driver (`ecgtune.search`) adds the trials to its searcher's study.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ecgtune.data.locate import require_store
from ecgtune.data.store import ECGStore
from ecgtune.experiment.files import SPEC_FILE, read_spec
from ecgtune.spec import Spec
from ecgtune.study import read_study_pointer

if TYPE_CHECKING:
    import optuna


@dataclass
class WarmStart:
    """The trials one earlier sweep contributes, and how many of each kind (for summary.json)."""

    run: str
    study: str
    trials: list[optuna.trial.FrozenTrial]

    def record(self) -> dict[str, Any]:
        states = [t.state.name.lower() for t in self.trials]
        return {"run": self.run, "study": self.study, "trials": len(states),
                "complete": states.count("complete"), "pruned": states.count("pruned")}  # fmt: skip


def warm_start(spec: Spec, runs: list[str]) -> list[WarmStart]:
    """The COMPLETE and PRUNED trials of each earlier sweep in `runs`, checked compatible with `spec`."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    out = []
    for run in runs:
        earlier = _earlier_spec(run)
        if difference := incompatibility(spec, earlier):
            raise ValueError(f"--warm-start {run}: not compatible with {spec.name}: {difference}")
        location = read_study_pointer(run)
        if location.is_journal and not os.path.isfile(location.storage):
            raise FileNotFoundError(f"--warm-start {run}: its study {location.storage} is not there")
        study = optuna.load_study(study_name=location.name, storage=location.open())
        trials = [t for t in study.get_trials(deepcopy=True, states=states)]
        out.append(WarmStart(str(run), location.name, trials))
    return out


def incompatibility(spec: Spec, earlier: Spec) -> str | None:
    """What makes `earlier`'s trials meaningless to `spec`'s searcher, in a few words; None if nothing."""
    space, old = _space(spec), _space(earlier)
    for key in sorted(set(space) | set(old)):
        if key not in old:
            return f"search.space.{key} is not searched there"
        if key not in space:
            return f"search.space.{key} is searched there, not here"
        if space[key] != old[key]:
            return f"search.space.{key} is {old[key]} there, {space[key]} here"
    if list(spec.targets) != list(earlier.targets):
        return f"targets are {earlier.targets} there, {spec.targets} here (another objective)"
    clock = _clock(spec), _clock(earlier)
    if clock[0] != clock[1]:
        return f"ASHA counts {clock[1]} epochs there, {clock[0]} here (the stopped trials' steps differ)"
    ours, theirs = spec.stages.finetune.epochs, earlier.stages.finetune.epochs
    if ours != theirs:
        return f"stages.finetune.epochs is {theirs} there, {ours} here (another fidelity)"
    for stage in ("pretrain", "finetune"):
        ours, theirs = _store_key(spec, stage), _store_key(earlier, stage)
        if ours != theirs:
            return f"data.{stage} holds other ECGs there (store key {theirs}, here {ours})"
    return None


def _earlier_spec(run: str) -> Spec:
    spec = read_spec(run)
    if spec is None:
        raise FileNotFoundError(f"--warm-start {run}: no {SPEC_FILE}; is it an ecgtune experiment directory?")
    return spec


def _space(spec: Spec) -> dict[str, Any]:
    space = spec.search.space if spec.search is not None else {}
    return {k: d.model_dump(exclude_defaults=True) for k, d in space.items()}


def _clock(spec: Spec) -> str:
    asha = spec.search.asha if spec.search is not None else None
    return "no" if asha is None else asha.clock


def _store_key(spec: Spec, stage: str) -> str | None:
    store = getattr(spec.data, stage)
    if store is None:
        return None
    try:
        return ECGStore(require_store(store)).key
    except (FileNotFoundError, ValueError) as exc:
        raise FileNotFoundError(f"cannot compare data.{stage}: {exc}") from None

"""fANOVA importance of the searched parameters, over trials compared at one fidelity."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import optuna
import pandas as pd

from ecgtune.experiment import EPOCH, OBJECTIVE, Experiment
from ecgtune.report.cells import choice_index, from_cell
from ecgtune.spec import Distribution


def optuna_distribution(dist: Distribution) -> optuna.distributions.BaseDistribution | None:
    """The Optuna distribution of one ecgtune search-space entry; None for `same_as` (not sampled).

    A `divides` parameter is sampled from a subset of its choices that depends on its parent; here it
    gets all of them, so one distribution covers every trial.
    """
    if dist.type == "same_as":
        return None
    if dist.type == "categorical":
        return optuna.distributions.CategoricalDistribution(list(dist.choices or []))
    if dist.type == "int":
        return optuna.distributions.IntDistribution(
            int(dist.low), int(dist.high), log=dist.log, step=int(dist.step or 1)
        )
    return optuna.distributions.FloatDistribution(
        float(dist.low), float(dist.high), log=dist.log, step=dist.step
    )


def param_importances(experiment: Experiment) -> tuple[dict[str, dict[str, float]], list[str]]:
    """fANOVA importance of the sampled parameters, per fidelity; and notes on what was skipped.

    Keys: "full fidelity (E epochs)" over finished trials, and "after e epochs" over every finished
    and ASHA-stopped trial, scored at e = the fewest epochs any of them reached (ASHA's first rung):
    both compare trials at one fidelity, never a stopped trial's early value with a final one.
    """
    notes: list[str] = []
    spec = experiment.spec
    if spec is None or spec.search is None:
        return {}, ["importance: no search space in the spec"]
    dists = {
        k: optuna_distribution(spec.search.space[k]) for k in experiment.sampled if k in spec.search.space
    }
    dists = {k: d for k, d in dists.items() if d is not None}
    if len(dists) < 2:
        return {}, [f"importance: {len(dists)} searched parameter(s); fANOVA needs at least 2"]
    t = experiment.trials
    done = t[t["status"].isin(["finished", "stopped"]) & (t["epochs"] > 0)]
    sets: dict[str, dict[str, float]] = {}
    full = done[done["full_fidelity"]]
    sets[f"full fidelity ({experiment.max_epochs} epochs)"] = dict(
        zip(full["trial_id"], full["objective_last"], strict=True)
    )
    if len(done) and done["epochs"].min() < experiment.max_epochs:
        e = int(done["epochs"].min())
        at = experiment.history[(experiment.history[EPOCH] == e)].set_index("trial_id")[OBJECTIVE]
        sets[f"after {e} epoch{'s' * (e != 1)} (finished + stopped)"] = {
            tid: float(at[tid]) for tid in done["trial_id"] if tid in at.index
        }
    out = {}
    params = t.set_index("trial_id")
    for label, values in sets.items():
        result = _fanova(params, dists, values)
        if isinstance(result, str):
            notes.append(f"importance {label}: {result}")
        else:
            out[label] = result
    return out, notes


def _fanova(
    params: pd.DataFrame,
    dists: Mapping[str, optuna.distributions.BaseDistribution],
    values: Mapping[str, float],
) -> dict[str, float] | str:
    trials = []
    for tid, value in values.items():
        if value is None or not math.isfinite(value):
            continue
        p = {k: _as_sampled(dists[k], params.at[tid, k]) for k in dists}
        if any(v is _UNUSABLE for v in p.values()):
            continue
        trials.append(optuna.trial.create_trial(params=p, distributions=dict(dists), value=float(value)))
    if len(trials) < 2:
        return f"{len(trials)} usable trial(s); skipped (needs 2)"
    if np.ptp([tr.value for tr in trials]) == 0:
        return "every trial has the same objective; skipped"
    varied = [k for k in dists if len({repr(tr.params[k]) for tr in trials}) > 1]
    if len(varied) < 2:
        return f"only {len(varied)} parameter(s) vary across these trials; skipped"
    with _quiet_optuna():
        study = optuna.create_study(direction="minimize")
        study.add_trials(trials)
        try:
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        except (ValueError, RuntimeError) as exc:
            return f"fANOVA failed ({exc}); skipped"
    return {k: float(v) for k, v in imp.items()}


_UNUSABLE = object()


def _as_sampled(dist: optuna.distributions.BaseDistribution, value: Any) -> Any:
    """`value` as `dist` would have produced it (a choice, an int), or _UNUSABLE (create_trial
    refuses values outside a distribution). A categorical choice may itself be None."""
    value = from_cell(value)
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        i = choice_index(dist.choices, value)
        return _UNUSABLE if i is None else dist.choices[i]
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return _UNUSABLE
    if not dist.low <= value <= dist.high:
        return _UNUSABLE
    if isinstance(dist, optuna.distributions.IntDistribution):
        ok = float(value).is_integer() and (int(value) - dist.low) % dist.step == 0
        return int(value) if ok else _UNUSABLE
    return float(value)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)

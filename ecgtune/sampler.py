"""Sampling a spec's search space with Optuna, define-by-run: the search driver's side of a spec.

`make_sampler(spec)` is what `ecgtune.search` hands Ray's OptunaSearch; `trial_params` picks a trial's
search-space keys back out of the searcher's config. Optuna only, no Ray: the sampler is tested on
plain Optuna studies (tests/test_sampler.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ecgtune.spec import Distribution, Spec
from ecgtune.spec.errors import SpecProblem
from ecgtune.spec.space import base_value, dependency_order, references, trial_base

if TYPE_CHECKING:
    import optuna


def sample_params(
    trial: optuna.Trial, space: Mapping[str, Distribution], fixed: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Sample one configuration, define-by-run: returns search-space key -> value.

    Parameters are drawn in dependency order. Optuna needs each parameter's distribution to stay the
    same across trials, so a `divides` parameter whose parent is searched is asked under one name per
    parent value, `model.num_heads|model.embed_dim=128`, with the choices that divide 128; the result
    maps it back to `model.num_heads`. `same_as` parameters are copied, not sampled. `fixed` gives the
    value of every same_as/divides target that is not searched (`fixed_values(spec)`).
    """
    fixed = fixed or {}
    values: dict[str, Any] = {}

    def current(ref: str, key: str) -> Any:
        if ref in space:
            return values[ref]
        if ref not in fixed:
            raise ValueError(f"{key} refers to {ref!r}, which is not searched: pass fixed=fixed_values(spec)")
        return fixed[ref]

    try:
        order = dependency_order(space)
    except SpecProblem as p:
        raise ValueError(str(p)) from None
    for key in order:
        dist = space[key]
        if dist.type == "same_as":
            values[key] = current(dist.same_as, key)
        elif dist.type == "int":
            step = int(dist.step or 1)
            values[key] = trial.suggest_int(key, int(dist.low), int(dist.high), step=step, log=dist.log)
        elif dist.type == "float":
            values[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
        elif dist.divides:
            parent = current(dist.divides, key)
            choices = [c for c in dist.choices or [] if parent % c == 0]
            name = f"{key}|{dist.divides}={parent}" if dist.divides in space else key
            values[key] = trial.suggest_categorical(name, choices)
        else:
            values[key] = trial.suggest_categorical(key, list(dist.choices or []))
    return values


def fixed_values(spec: Spec) -> dict[str, Any]:
    """The value of every same_as/divides target that the spec does not search."""
    if spec.search is None:
        return {}
    base = trial_base(spec)
    space = spec.search.space
    return {
        ref: base_value(base, ref) for dist in space.values() for ref in references(dist) if ref not in space
    }


def make_sampler(spec: Spec) -> Callable[[optuna.Trial], dict[str, Any]]:
    """`trial -> sample_params(trial, space, fixed)` for this spec, picklable (a searcher is saved)."""
    if spec.search is None:
        raise ValueError(f"spec {spec.name!r} has no search section")
    return functools.partial(sample_params, space=dict(spec.search.space), fixed=fixed_values(spec))


def trial_params(space: Mapping[str, Distribution], config: Mapping[str, Any]) -> dict[str, Any]:
    """The search-space keys of a searcher's config. Ray's OptunaSearch merges Optuna's own parameter
    names (`model.num_heads|model.embed_dim=128`) with what the sampler returns; keep only the latter."""
    missing = [k for k in space if k not in config]
    if missing:
        raise ValueError(f"config lacks searched keys {missing}; has {sorted(config)}")
    return {k: config[k] for k in space}

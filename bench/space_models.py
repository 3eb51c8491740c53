"""Models picked from a shipped search space: the smallest, median or largest of its size knobs, as a
config for `build_model`, and that model's FLOPs per ECG counted without memory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Knobs whose *low* end is the larger model: a smaller patch means more tokens.
LARGER_WHEN_LOW = frozenset({"model.patch_size"})


def _is_size_knob(key: str) -> bool:
    return key.startswith("model.") and "dropout" not in key


def _mid_int(low: int, high: int, log: bool, step: int | None) -> int:
    mid = float(np.sqrt(low * high)) if log else (low + high) / 2
    step = step or 1
    return int(low + round((mid - low) / step) * step)


def space_params(spec, which: str) -> dict[str, Any]:
    """Search-space values of the model's size knobs for the 'smallest', 'median' or 'largest' model.

    smallest = every size knob at the end of its range that gives the smaller model (the low end,
    except patch size, where it is the high end); largest = the other end; median = the median of
    the search distribution (geometric mean for log ranges, the middle choice of a categorical).
    Dropouts, learning rates and other non-size knobs are left at the spec's values; `same_as`
    knobs follow their target (apply_params fills them); a `divides` knob picks among the choices
    that divide its parent's chosen value.
    """
    from ecgtune.sampler import fixed_values

    if which not in ("smallest", "median", "largest"):
        raise ValueError(f"which must be smallest, median or largest, got {which!r}")
    space = spec.search.space
    fixed = fixed_values(spec)
    chosen: dict[str, Any] = {}
    # Parents before the knobs that must divide them.
    for key in sorted(space, key=lambda k: space[k].divides is not None):
        dist = space[key]
        if not _is_size_knob(key) or dist.type == "same_as":
            continue
        if dist.type in ("int", "float"):
            lo, hi = dist.low, dist.high
            if which == "median":
                value = (
                    _mid_int(int(lo), int(hi), dist.log, dist.step)
                    if dist.type == "int"
                    else (float(np.sqrt(lo * hi)) if dist.log else (lo + hi) / 2)
                )
                chosen[key] = value
                continue
            ends = [lo, hi]
        else:
            choices = list(dist.choices or [])
            if dist.divides:
                parent = chosen.get(dist.divides, fixed.get(dist.divides))
                choices = [c for c in choices if parent % c == 0]
            ends = sorted(choices)
            if which == "median":
                chosen[key] = ends[len(ends) // 2]
                continue
        small_first = key not in LARGER_WHEN_LOW
        pick_low = (which == "smallest") == small_first
        chosen[key] = ends[0] if pick_low else ends[-1]
    return chosen


def space_model_config(spec_path: Path, which: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config for `build_model`, the search-space values used) of a shipped sweep spec."""
    from ecgtune.spec import apply_params, load_spec

    spec = load_spec(spec_path)
    params = space_params(spec, which)
    trial = apply_params(spec, params)
    config = {"name": trial.model.name, **trial.model.params, "num_outputs": len(trial.targets)}
    return config, params


def model_flops(config: Mapping[str, Any]) -> int:
    """flops_per_ecg of a model config, counted on the meta device: no memory, no arithmetic (the
    largest ResNet of resnet_widths does ~800 GFLOP per ECG). Same count as on the CPU."""
    import torch

    from ecgtune.models import build_model, flops_per_ecg

    with torch.device("meta"):
        model = build_model(dict(config))
    return flops_per_ecg(model)

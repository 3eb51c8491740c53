"""A search space's keys as coordinates in [0, 1]: how the curve table samples it (a Sobol point is decoded
into a configuration) and how the surrogate reads a configuration (encoded back into the cube).

Each key's coordinate is uniform in the scale Optuna samples it on: log scale for `log: true`, one equal
share of [0, 1) per integer or choice otherwise. `same_as` entries are copies, not coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def cube_keys(space: Mapping[str, Any], keys: Sequence[str] | None = None) -> list[str]:
    """The coordinates of a space, in the order given (default: the space's order), copies left out."""
    keys = list(space) if keys is None else list(keys)
    return [k for k in keys if space[k].type != "same_as"]


def _levels(dist: Any) -> list[Any] | None:
    """The values of a discrete distribution, in order; None for a float range."""
    if dist.type == "categorical":
        return list(dist.choices)
    if dist.type == "int":
        return list(range(int(dist.low), int(dist.high) + 1, int(dist.step or 1)))
    return None


def decode(space: Mapping[str, Any], keys: Sequence[str], u: Sequence[float]) -> dict[str, Any]:
    """The configuration at point `u` of the cube spanned by `keys` (each coordinate in [0, 1))."""
    out: dict[str, Any] = {}
    for key, x in zip(keys, u, strict=True):
        dist = space[key]
        x = min(max(float(x), 0.0), 1.0 - 1e-12)
        if dist.type == "int" and dist.log:
            low, high = math.log(dist.low), math.log(dist.high + 1)
            out[key] = min(int(math.exp(low + x * (high - low))), int(dist.high))
        elif (levels := _levels(dist)) is not None:
            out[key] = levels[int(x * len(levels))]
        elif dist.log:
            out[key] = float(math.exp(math.log(dist.low) + x * (math.log(dist.high) - math.log(dist.low))))
        else:
            out[key] = float(dist.low + x * (dist.high - dist.low))
    for key, dist in space.items():  # copies follow their target
        if dist.type == "same_as" and dist.same_as in out:
            out[key] = out[dist.same_as]
    return out


def encode(space: Mapping[str, Any], keys: Sequence[str], config: Mapping[str, Any]) -> np.ndarray:
    """A configuration's point in the cube: the middle of its cell for discrete values (so
    `decode(encode(c)) == c`), the exact position for floats."""
    u = np.empty(len(keys))
    for i, key in enumerate(keys):
        dist, value = space[key], config[key]
        if dist.type == "int" and dist.log:
            low, high = math.log(dist.low), math.log(dist.high + 1)
            u[i] = (math.log(value + 0.5) - low) / (high - low)
        elif (levels := _levels(dist)) is not None:
            u[i] = (levels.index(value) + 0.5) / len(levels)
        elif dist.log:
            u[i] = (math.log(value) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low))
        else:
            u[i] = (value - dist.low) / (dist.high - dist.low)
    return np.clip(u, 0.0, 1.0)

"""One training stage's settings (`TrainConfig`): each setting's one declaration, default and bounds.

Apart from the loop (`ecgtune.train`, which uses it) so that reading and checking a spec, whose stages
are made from these fields (`ecgtune.spec.StageSpec`), never imports torch: `ecgtune validate` rejects a
broken file in a fraction of a second instead of after torch's start-up.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training stage: the one declaration of each setting, its default
    and its bounds. A spec's stages (`ecgtune.spec.StageSpec`) are made from these fields, so a new
    knob or bound is added here only."""

    epochs: Annotated[int, Field(ge=0)] = 10
    batch_size: Annotated[int, Field(ge=1)] = 64
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-2
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.05  # of all steps, for "cosine"
    grad_clip: Annotated[float | None, Field(gt=0)] = 1.0
    loss: Literal["l1", "huber"] = "l1"
    huber_delta: Annotated[float, Field(gt=0)] = 1.0  # in standardised units
    # Pretraining stores can be far larger than an epoch needs; None = the whole split.
    samples_per_epoch: Annotated[int | None, Field(ge=1)] = None
    freeze_backbone_epochs: Annotated[int, Field(ge=0)] = 0
    eval_batch_size: Annotated[int, Field(ge=1)] = 256
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU, where it would only slow things down
    compile: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        bad = []
        for name, check in _setting_checks().items():
            try:
                check.validate_python(getattr(self, name))
            except ValidationError as exc:
                reason = exc.errors(include_url=False)[0]["msg"]
                bad.append(f"{name}={getattr(self, name)!r} ({reason})")
        if bad:
            raise ValueError(f"invalid TrainConfig values: {', '.join(bad)}")


@functools.cache
def _setting_checks() -> dict[str, TypeAdapter[Any]]:
    """A validator per TrainConfig field, from its declared type and bounds. NaN and infinity are never
    a valid setting (a NaN bound would pass every comparison)."""
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    config = ConfigDict(allow_inf_nan=False)
    return {f.name: TypeAdapter(hints[f.name], config=config) for f in fields(TrainConfig)}

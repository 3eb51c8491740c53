"""Sweep specs and training configs: YAML -> validated pydantic objects, with clear errors.

Modules, each importing only the ones before it:
- `schema`: what a spec is (pydantic models) and the run facts a Spec answers;
- `errors`: SpecError and pydantic's errors as 'file: key.path: what is wrong' lines;
- `space`: key paths into a spec, model checks, same_as/divides relations, searched-value checks;
- `configs`: `spec_from_dict` with every cross-field check, and a trial's config (`apply_params`,
  `apply_variant`);
- `load`: YAML in and out.

Sampling a search space is the search driver's (`ecgtune.sampler`); where stores are found is the data
layer's (`ecgtune.data.locate`).
"""

from __future__ import annotations

from typing import Any

from ecgtune.spec.configs import apply_params, apply_variant, check_spec, spec_from_dict
from ecgtune.spec.errors import SpecError
from ecgtune.spec.load import dump_spec, load_spec
from ecgtune.spec.schema import (
    SPEC_VERSION,
    ASHASpec,
    BackboneSharingSpec,
    DataSpec,
    Distribution,
    ModelSpec,
    ResourcesSpec,
    RunSpec,
    SearcherSpec,
    SearchSpec,
    Spec,
    StageSpec,
    StagesSpec,
    StoreSpec,
    TransferSpec,
    asha_max_t,
)
from ecgtune.spec.space import describe_space


def __getattr__(name: str) -> Any:
    # Sweeps saved before the sampler moved to `ecgtune.sampler` pickled their searcher's space as
    # `ecgtune.spec.sample_params`; resuming one must still find it.
    if name == "sample_params":
        from ecgtune.sampler import sample_params

        return sample_params
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SPEC_VERSION",
    "ASHASpec",
    "BackboneSharingSpec",
    "DataSpec",
    "Distribution",
    "ModelSpec",
    "ResourcesSpec",
    "RunSpec",
    "SearchSpec",
    "SearcherSpec",
    "Spec",
    "SpecError",
    "StageSpec",
    "StagesSpec",
    "StoreSpec",
    "TransferSpec",
    "apply_params",
    "apply_variant",
    "asha_max_t",
    "check_spec",
    "describe_space",
    "dump_spec",
    "load_spec",
    "spec_from_dict",
]

"""Checked Specs from dicts: `spec_from_dict` and the checks across fields (`check_spec`), and a trial's
own config from a sweep spec (`apply_params`, `apply_variant`), checked the same way.

Every problem is found before any cluster time is spent: unknown keys, wrong types, empty ranges,
unknown models, impossible model knobs, searched values that cannot run. Variant keys (`variants`,
`apply_variant`) are paths into the spec itself: `model.name`, `model.params.<knob>[.<i>]`,
`data.pretrain`, `stages.finetune.epochs`, ...
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from ecgtune.spec.errors import SpecError, SpecProblem, format_validation_error
from ecgtune.spec.schema import NAME_PATTERN, SPEC_VERSION, SearchSpec, Spec, asha_max_t
from ecgtune.spec.space import (
    base_value,
    dependency_order,
    parse_key,
    relation_problems,
    run_problems,
    set_key,
    trial_base,
    value_problems,
)


def spec_from_dict(data: Any, source: str = "<dict>") -> Spec:
    """Validate a mapping (e.g. parsed YAML) into a Spec and run every cross-field check."""
    if not isinstance(data, Mapping):
        raise SpecError(
            source,
            [
                f"expected a mapping of keys ({', '.join(Spec.model_fields)}) at top level, "
                f"got {type(data).__name__}"
            ],
        )
    if bad := list(_non_finite(data)):
        raise SpecError(source, [f"{p}: not a finite number (.nan and .inf are never valid)" for p in bad])
    try:
        spec = Spec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(source, format_validation_error(exc)) from None
    check_spec(spec, source=source)
    return spec


def _non_finite(data: Any, path: str = "") -> Iterator[str]:
    """Key paths of NaN or infinite numbers anywhere in parsed YAML."""
    if isinstance(data, float) and not math.isfinite(data):
        yield path or "<top level>"
    elif isinstance(data, Mapping):
        for k, v in data.items():
            yield from _non_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _non_finite(v, f"{path}[{i}]")


# ================================================================================= cross-field checks


def check_spec(spec: Spec, source: str = "<spec>") -> None:
    """Every check that needs more than one field; raises SpecError with one line per problem.

    load_spec and spec_from_dict call it; code that builds a Spec by hand should too.
    """
    problems = _version_problems(spec) + run_problems(spec)
    if spec.search is not None:
        problems += _search_problems(spec, spec.search, deep=not problems)
    if spec.variants is not None:
        problems += _variant_problems(spec, deep=not problems)
    if problems:
        raise SpecError(source, problems)


def _version_problems(spec: Spec) -> list[str]:
    if spec.version != SPEC_VERSION:
        return [f"version: this ecgtune reads spec version {SPEC_VERSION} (got {spec.version})"]
    return []


def _search_problems(spec: Spec, search: SearchSpec, deep: bool) -> list[str]:
    """Search-space keys, same_as/divides relations, ASHA against epochs, and (when `deep` and
    everything else holds) a meta-device build for every searched value, one parameter at a time."""
    from ecgtune.models import model_names  # imports torch: only once a spec has parsed this far

    space = search.space
    base = trial_base(spec)
    problems = []
    for key in space:
        if key.startswith("model.") and spec.model.name not in model_names():
            continue  # reported once, as model.name
        try:
            section, field, _ = parse_key(key, spec.model.name)
            base_value(base, key)
        except SpecProblem as p:
            problems.append(f"search.space.{key}: {p}")
            continue
        if field == "epochs":
            problems.append(
                f"search.space.{key}: epochs set the clock ASHA stops trials on and cannot be searched; "
                "fix them (compare lengths with variants)"
            )
        elif section in ("pretrain", "transfer") and not spec.pretrain_epochs:
            problems.append(
                f"search.space.{key}: this spec never pretrains (data.pretrain null or "
                "stages.pretrain.epochs 0), so the value would have no effect"
            )
    if not problems:
        problems += relation_problems(space, base)
    if search.asha is not None and search.asha.grace_period > asha_max_t(spec, search.asha):
        if search.asha.clock == "all":
            counted = (
                f"the {spec.total_epochs} epochs a trial trains (pretrain {spec.pretrain_epochs} + finetune "
                f"{spec.stages.finetune.epochs})"
            )
        else:
            counted = f"the {spec.stages.finetune.epochs} fine-tuning epochs ASHA counts (search.asha.clock)"
        problems.append(f"search.asha.grace_period: {search.asha.grace_period} is more than {counted}")
    if search.searcher.multivariate and search.searcher.algorithm != "tpe":
        problems.append(
            f"search.searcher.multivariate: only TPE has it (algorithm is {search.searcher.algorithm})"
        )
    if search.backbones is not None:
        problems += _sharing_problems(spec, search)
    if spec.variants is not None:
        if space:
            problems.append(
                "search.space: must be empty when variants are given (each variant is one fixed trial)"
            )
        if search.asha is not None:
            problems.append(
                "search.asha: must be null when variants are given (fixed experiments run to the end)"
            )
    if deep and not problems:
        problems += value_problems(space, base)
    return problems


def _sharing_problems(spec: Spec, search: SearchSpec) -> list[str]:
    """`search.backbones` needs a pretraining stage, a store to share through, and fine-tuning keys to
    vary: a trial that reuses a backbone draws only those."""
    if not spec.pretrain_epochs:
        return ["search.backbones: this spec never pretrains, so there is no backbone to share"]
    if not spec.run.reuse_backbones:
        return ["search.backbones: run.reuse_backbones is false, so no trial could load a shared backbone"]
    finetune_keys = [k for k in search.space if not k.startswith(("model.", "pretrain."))]
    if not [k for k in finetune_keys if search.space[k].type != "same_as"]:
        return [
            "search.backbones: search.space has no finetune.* or transfer.* key, so every trial sharing a "
            "backbone would train the same configuration"
        ]
    return [
        f"search.space.{k}: a fine-tuning key cannot follow a backbone key ({ref}) when backbones are shared"
        for k in finetune_keys
        for ref in (search.space[k].same_as, search.space[k].divides)
        if ref and ref.startswith(("model.", "pretrain."))
    ]


def _variant_problems(spec: Spec, deep: bool) -> list[str]:
    problems = []
    if spec.search is None:
        problems.append(
            "variants: a spec with variants needs a search section (num_samples, max_concurrent_trials; "
            "space {} and asha null)"
        )
    if not spec.variants:
        problems.append("variants: give at least one variant, or leave the key out")
    for name in spec.variants or {}:
        if not re.match(NAME_PATTERN, name):
            problems.append(f"variants.{name}: variant names may use only letters, digits, '_', '.', '-'")
    if problems or not deep:
        return problems
    for name in spec.variants or {}:
        try:
            apply_variant(spec, name)
        except SpecError as exc:
            problems += [f"variants.{name}: {p}" for p in exc.problems]
    return problems


# ===================================================================================== trial configs


def apply_params(spec: Spec, params: Mapping[str, Any]) -> Spec:
    """A standalone training config: `spec` with search-space keys set to `params` and `search` dropped.

    `params` maps search-space keys (`model.block_widths.0`, `finetune.lr`, `transfer.keep_head`) to
    values. Every `same_as` parameter of the spec's space that `params` leaves out is set to its
    target's resulting value, so a declared tie always holds. The input spec is left unchanged; the
    result is checked like a loaded spec.
    """
    d = trial_base(spec)
    params = {k: _python_scalar(v) for k, v in params.items()}
    problems = []
    for key, value in params.items():
        try:
            set_key(d, key, value)
        except SpecProblem as p:
            problems.append(f"{key}: {p}")
    source = f"{spec.name} with params {params}"
    if problems:
        raise SpecError(source, problems)
    space = spec.search.space if spec.search is not None else {}
    for key in dependency_order(space):
        dist = space[key]
        if dist.type == "same_as" and key not in params:
            set_key(d, key, base_value(d, dist.same_as))  # d already holds the target's new value
    return spec_from_dict(d, source=source)


def _python_scalar(value: Any) -> Any:
    """numpy scalars (which a searcher may hand over) -> Python scalars."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)) else value


VARIANT_ROOTS = ("model", "targets", "data", "stages", "seed", "resources", "run")


def apply_variant(spec: Spec, name: str) -> Spec:
    """A standalone training config: `spec` with variant `name`'s overrides, `search` and `variants` dropped.

    Variant keys are paths into the spec (`model.name`, `model.params.block_kernel`,
    `model.params.stem_widths.1`, `data.pretrain`, `stages.finetune.epochs`, ...). The result is named
    `<spec name>.<variant>`.
    """
    if not spec.variants or name not in spec.variants:
        raise SpecError(spec.name, [f"unknown variant {name!r}; variants: {', '.join(spec.variants or {})}"])
    d = trial_base(spec)
    d["name"] = f"{spec.name}.{name}"
    problems = []
    # The model first: knob paths are checked against the variant's model, wherever they are written.
    overrides = sorted(spec.variants[name].items(), key=lambda kv: kv[0] not in ("model", "model.name"))
    for path, value in overrides:
        try:
            _set_path(d, path, value)
        except SpecProblem as p:
            problems.append(f"{path}: {p}")
    source = f"variant {name!r} of {spec.name}"
    if problems:
        raise SpecError(source, problems)
    return spec_from_dict(d, source=source)


def _set_path(d: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    if parts[0] not in VARIANT_ROOTS:
        raise SpecProblem(
            f"a variant cannot set {parts[0]!r}; variant keys start with: {', '.join(VARIANT_ROOTS)}"
        )
    if parts[:2] == ["model", "params"] and len(parts) in (3, 4):
        set_key(d, ".".join(["model", *parts[2:]]), value)  # list knobs need their defaults
        return
    node: Any = d
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SpecProblem(f"{'.'.join(parts[: i + 1])} is {node!r}; cannot set {part!r} in it")
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    else:
        raise SpecProblem(f"{'.'.join(parts[:-1])} is {node!r}; cannot set {last!r} in it")

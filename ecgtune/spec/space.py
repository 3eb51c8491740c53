"""Key paths into a spec and what a search space may do with them.

Search-space keys (`search.space`, `apply_params`) name what a trial may vary: `model.<knob>`,
`model.<knob>.<i>` (element i of a list knob), `pretrain.<field>`, `finetune.<field>` (StageSpec
fields) and `transfer.keep_head`. This module reads them against a spec dumped to a dict (`trial_base`),
checks model knobs (a meta-device build), orders the `same_as`/`divides` relations between searched
parameters and checks that every searched value gives a config that can run.

Read top to bottom: key paths -> model and run checks -> relations -> value checks -> describe_space.
"""

from __future__ import annotations

import copy
import functools
import inspect
import types
import typing
import warnings
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ecgtune.spec.errors import SpecProblem, allowed_hint, format_validation_error, strict_problem
from ecgtune.spec.schema import Distribution, Spec, StageSpec, TransferSpec, is_int
from ecgtune.targets import check_targets

# ---------------------------------------------------------------------------------------- key paths

STAGE_PREFIXES = ("pretrain", "finetune")
# Set by the run, not by a spec: one output per target, 8 leads, 10 s at 500 Hz.
RESERVED_KNOBS = ("in_channels", "num_outputs", "signal_length")
SPACE_PREFIXES = "model.<knob>, model.<knob>.<i>, pretrain.<field>, finetune.<field>, transfer.keep_head"


def trial_base(spec: Spec) -> dict[str, Any]:
    """The spec as a plain dict, without search or variants: what one trial trains before overrides."""
    d = spec.model_dump(mode="json")
    d["search"] = None
    d["variants"] = None
    return d


def _models() -> types.ModuleType:
    """The model registry, imported on first use: it imports torch (seconds), which a spec refused
    before its model is checked (`ecgtune validate` of a broken file) must not wait for."""
    import ecgtune.models

    return ecgtune.models


def _family(model_name: str) -> str:
    models = _models()
    if model_name in models.MODEL_FAMILIES:
        return model_name
    if model_name in models.PRESETS:
        return models.PRESETS[model_name][0]
    raise SpecProblem(f"unknown model {model_name!r}; known: {', '.join(models.model_names())}")


@functools.cache
def _knob_hints(family: str) -> dict[str, Any]:
    """Constructor keyword -> type hint, for the knobs a spec may set."""
    hints = typing.get_type_hints(_models().MODEL_FAMILIES[family].__init__)
    return {k: v for k, v in hints.items() if k != "return" and k not in RESERVED_KNOBS}


def _knob_defaults(model_name: str) -> dict[str, Any]:
    """Every knob's value when a spec does not set it: the preset's, else the constructor default."""
    family, models = _family(model_name), _models()
    signature = inspect.signature(models.MODEL_FAMILIES[family])
    defaults = {k: p.default for k, p in signature.parameters.items() if p.default is not p.empty}
    if model_name in models.PRESETS:
        defaults.update(models.PRESETS[model_name][1])
    return {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}


def _check_knob(model_name: str, knob: str) -> None:
    family = _family(model_name)
    if knob in RESERVED_KNOBS:
        raise SpecProblem(
            f"{knob} is set by the run (8 leads, 5000 samples, one output per target), not a knob"
        )
    allowed = list(_knob_hints(family))
    if knob not in allowed:
        what = family if model_name == family else f"{model_name} (a {family})"
        raise SpecProblem(f"unknown knob for {what}{allowed_hint(knob, allowed)}")


def parse_key(key: str, model_name: str) -> tuple[str, str, int | None]:
    """A search-space key -> (section, field, list index). Section: model, pretrain, finetune, transfer."""
    parts = key.split(".")
    head = parts[0]
    if head == "model" and len(parts) in (2, 3):
        _check_knob(model_name, parts[1])
        if len(parts) == 3:
            if not parts[2].isdigit():
                raise SpecProblem(f"list index {parts[2]!r} is not a non-negative integer")
            return "model", parts[1], int(parts[2])
        return "model", parts[1], None
    if head in STAGE_PREFIXES and len(parts) == 2:
        if parts[1] not in StageSpec.model_fields:
            raise SpecProblem(
                f"unknown stage field {parts[1]!r}{allowed_hint(parts[1], list(StageSpec.model_fields))}"
            )
        return head, parts[1], None
    if head == "transfer" and len(parts) == 2:
        if parts[1] not in TransferSpec.model_fields:
            raise SpecProblem(
                f"unknown transfer field {parts[1]!r}; allowed: {', '.join(TransferSpec.model_fields)}"
            )
        return head, parts[1], None
    if head in ("model", *STAGE_PREFIXES, "transfer"):
        raise SpecProblem(f"malformed key; allowed forms: {SPACE_PREFIXES}")
    raise SpecProblem(f"unknown prefix {head!r}; allowed: {SPACE_PREFIXES}")


def base_value(d: Mapping[str, Any], key: str) -> Any:
    """The value `key` has in the dumped spec `d` when nothing overrides it."""
    section, field, index = parse_key(key, d["model"]["name"])
    if section == "model":
        params = d["model"]["params"]
        value = params[field] if field in params else _knob_defaults(d["model"]["name"])[field]
        if index is None:
            return value
        if not isinstance(value, (list, tuple)):
            raise SpecProblem(f"{field} is {value!r}, not a list; it has no element {index}")
        if index >= len(value):
            raise SpecProblem(f"index {index} out of range: {field} is {list(value)} ({len(value)} elements)")
        return value[index]
    return d["stages"][section][field]


def set_key(d: dict[str, Any], key: str, value: Any) -> None:
    """Set search-space key `key` to `value` in the dumped spec `d` (in place)."""
    section, field, index = parse_key(key, d["model"]["name"])
    if section == "model":
        params = d["model"]["params"]
        if index is not None:
            base_value(d, key)  # raises if the knob is no list or is too short
            elements = list(params[field] if field in params else _knob_defaults(d["model"]["name"])[field])
            elements[index] = value
            value = elements
        params[field] = value
        return
    model = StageSpec if section in STAGE_PREFIXES else TransferSpec
    if problem := strict_problem(model.model_fields[field].annotation, value):
        raise SpecProblem(problem[1])
    d["stages"][section][field] = value


# ----------------------------------------------------------------------------- model and run checks


def _model_problems(name: str, params: Mapping[str, Any], num_outputs: int) -> list[str]:
    """Unknown model or knobs, knob values of the wrong type, and what the constructor rejects."""
    try:
        family = _family(name)
    except SpecProblem as p:
        return [f"model.name: {p}"]
    problems = []
    hints = _knob_hints(family)
    for knob, value in params.items():
        try:
            _check_knob(name, knob)
        except SpecProblem as p:
            problems.append(f"model.params.{knob}: {p}")
            continue
        if value is not None and (problem := strict_problem(hints[knob], value)):
            at, why = problem
            problems.append(f"model.params.{knob}{'.' + at if at else ''}: {why}")
    if problems:
        return problems
    if error := _build_error(name, params, num_outputs):
        return [f"model.params: {error}"]
    return []


def _freeze(value: Any) -> Any:
    """A hashable key for the build memo; types are part of it (1, 1.0 and True differ here)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return (type(value).__name__, value)


_BUILD_ERRORS: dict[Any, str | None] = {}


def _build_error(name: str, params: Mapping[str, Any], num_outputs: int) -> str | None:
    """Build the model on the meta device (no memory, no init cost) and return why that failed, if it did.

    Memoised: a build of vit_paper or resnet_paper costs ~50 ms of Python on a slow core, and a sweep
    check tries each searched value once.
    """
    key = (name, _freeze(params), num_outputs)
    if key not in _BUILD_ERRORS:
        if len(_BUILD_ERRORS) > 4096:
            _BUILD_ERRORS.clear()
        import torch

        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                _models().create_model(name, **params, num_outputs=num_outputs)
            _BUILD_ERRORS[key] = None
        except Exception as exc:  # the constructor's message is the explanation we pass on
            _BUILD_ERRORS[key] = str(exc) or type(exc).__name__
    return _BUILD_ERRORS[key]


def run_problems(spec: Spec) -> list[str]:
    """What makes one training run impossible: targets, model, stages, resources."""
    problems = []
    try:
        targets = check_targets(spec.targets)
    except ValueError as exc:
        problems.append(f"targets: {exc}")
        targets = tuple(spec.targets)
    problems += _model_problems(spec.model.name, spec.model.params, max(len(targets), 1))
    for stage in STAGE_PREFIXES:
        s = getattr(spec.stages, stage)
        if s.freeze_backbone_epochs > s.epochs:
            problems.append(
                f"stages.{stage}.freeze_backbone_epochs: {s.freeze_backbone_epochs} is more than "
                f"the stage's {s.epochs} epochs"
            )
    if spec.total_epochs == 0:
        problems.append(
            "stages: nothing to train: finetune.epochs is 0 and there is no pretraining "
            "(data.pretrain null or stages.pretrain.epochs 0)"
        )
    gpu = spec.resources.gpu
    if gpu > 1 and gpu != int(gpu):
        problems.append(f"resources.gpu: a share above 1 GPU must be a whole number (got {gpu})")
    return problems


# ---------------------------------------------------------------------------------------- relations


def references(dist: Distribution) -> list[str]:
    return [r for r in (dist.same_as, dist.divides) if r]


def dependency_order(space: Mapping[str, Distribution]) -> list[str]:
    """Keys with every same_as/divides target that is itself searched placed before them."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(key: str, chain: list[str]) -> None:
        if state.get(key) == "done":
            return
        if state.get(key) == "open":
            raise SpecProblem(f"same_as/divides cycle: {' -> '.join([*chain, key])}")
        state[key] = "open"
        for ref in references(space[key]):
            if ref in space:
                visit(ref, [*chain, key])
        state[key] = "done"
        order.append(key)

    for key in space:
        visit(key, [])
    return order


def _possible_values(space: Mapping[str, Distribution], key: str, limit: int = 4096) -> list[Any] | None:
    """Every value `key` can take (following same_as), or None for a float range."""
    dist = space[key]
    if dist.type == "same_as":
        return _possible_values(space, dist.same_as, limit) if dist.same_as in space else None
    if dist.type == "categorical":
        return list(dist.choices or [])
    if dist.type == "float":
        return None
    values = range(int(dist.low), int(dist.high) + 1, int(dist.step or 1))
    if len(values) > limit:
        raise SpecProblem(f"has {len(values)} values; at most {limit} can be checked")
    return list(values)


def relation_problems(space: Mapping[str, Distribution], base: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, dist in space.items():
        for ref in references(dist):
            if ref == key:
                problems.append(f"search.space.{key}: refers to itself")
                continue
            if ref not in space:
                try:
                    base_value(base, ref)
                except SpecProblem as p:
                    problems.append(
                        f"search.space.{key}: {ref!r} is neither a key of search.space "
                        f"nor a fixed parameter ({p})"
                    )
    if problems:
        return problems
    try:
        dependency_order(space)
    except SpecProblem as p:
        return [f"search.space: {p}"]
    for key, dist in space.items():
        if not dist.divides:
            continue
        parent = dist.divides
        try:
            values = _possible_values(space, parent) if parent in space else [base_value(base, parent)]
        except SpecProblem as p:
            problems.append(f"search.space.{key}: divides {parent}, which {p}")
            continue
        if values is None or not all(is_int(v) for v in values):
            problems.append(f"search.space.{key}: divides {parent}, which takes non-integer values")
            continue
        empty = [v for v in values if not any(v % c == 0 for c in dist.choices or [])]
        if empty:
            problems.append(
                f"search.space.{key}: no choice in {dist.choices} divides {parent}="
                f"{', '.join(map(str, empty[:5]))}{' ...' if len(empty) > 5 else ''}"
            )
    return problems


# ------------------------------------------------------------------------------------- value checks


def _test_values(dist: Distribution) -> list[Any]:
    """The values a check tries: every choice, every int when there are <= 64, else the two ends."""
    if dist.type == "categorical":
        return list(dist.choices or [])
    if dist.type == "float":
        return sorted({float(dist.low), float(dist.high)})
    values = range(int(dist.low), int(dist.high) + 1, int(dist.step or 1))
    return list(values) if len(values) <= 64 else [values[0], values[-1]]


def _resolve(
    space: Mapping[str, Distribution], base: Mapping[str, Any], assigned: Mapping[str, Any]
) -> dict[str, Any]:
    """A value for every searched key: `assigned` ones as given, the rest at their fixed/default value,
    with same_as copies made and divides honoured (the base value if it divides, else the first that does)."""
    values: dict[str, Any] = {}

    def current(ref: str) -> Any:
        return values[ref] if ref in space else base_value(base, ref)

    for key in dependency_order(space):
        dist = space[key]
        if key in assigned:
            values[key] = assigned[key]
        elif dist.type == "same_as":
            values[key] = current(dist.same_as)
        elif dist.divides:
            parent = current(dist.divides)
            ok = [c for c in dist.choices or [] if parent % c == 0]
            own = base_value(base, key)
            values[key] = own if own in ok else ok[0]
        else:
            values[key] = base_value(base, key)
    return values


def _config_problem(base: Mapping[str, Any], values: Mapping[str, Any]) -> str | None:
    """Why the trial config `base` + `values` cannot run (first reason), or None."""
    d = copy.deepcopy(dict(base))
    try:
        for key, value in values.items():
            set_key(d, key, value)
    except SpecProblem as p:
        return str(p)
    try:
        spec = Spec.model_validate(d)
    except ValidationError as exc:
        return format_validation_error(exc)[0]
    problems = run_problems(spec)
    return problems[0].split(": ", 1)[1] if problems else None


def value_problems(space: Mapping[str, Distribution], base: Mapping[str, Any]) -> list[str]:
    if problem := _config_problem(base, _resolve(space, base, {})):
        return [
            "search.space: the fixed parameters with same_as/divides applied give an impossible config: "
            + problem
        ]
    problems = []
    for key, dist in space.items():
        if dist.type == "same_as":
            continue
        what = "choice" if dist.type == "categorical" else "value"
        for value in _test_values(dist):
            assigned = {key: value}
            if dist.divides:
                parent = _root(space, dist.divides)
                if parent in space:
                    fits = [p for p in _possible_values(space, parent) or [] if p % value == 0]
                    if not fits:
                        continue  # never sampled: no parent value it divides
                    assigned[parent] = fits[0]
                elif base_value(base, parent) % value:
                    continue
            if problem := _config_problem(base, _resolve(space, base, assigned)):
                problems.append(f"search.space.{key}: {what} {value!r} is impossible: {problem}")
                break  # one line per key is enough to act on
    return problems


def _root(space: Mapping[str, Distribution], key: str) -> str:
    while key in space and space[key].type == "same_as":
        key = space[key].same_as or key
    return key


# ------------------------------------------------------------------------------------------ display


def describe_space(space: Mapping[str, Distribution]) -> str:
    """One line per parameter, e.g. `finetune.lr  float [0.0001, 0.01] log`."""
    width = max((len(k) for k in space), default=0)
    lines = []
    for key, d in space.items():
        if d.type == "same_as":
            text = f"= {d.same_as}"
        elif d.type == "categorical":
            text = "one of {" + ", ".join(map(str, d.choices or [])) + "}"
            text += f" dividing {d.divides}" if d.divides else ""
        else:
            text = (
                f"{d.type} [{d.low}, {d.high}]"
                + (" log" if d.log else "")
                + (f" step {d.step}" if d.step else "")
            )
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)

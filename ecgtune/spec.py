"""Sweep specs and training configs: YAML -> validated pydantic objects, with clear errors.

One schema serves both uses:
- a *sweep spec* (`sweeps/*.yaml`) has a `search` section: what to vary, how to stop;
- a *training config* (`ecgtune export` output, or hand-written) has none: one fixed run.

Everything is checked at load time — unknown keys, wrong types, empty ranges,
unknown models, impossible model knobs — and errors name the file, the key
path and what is allowed, before any cluster time is spent:

    sweeps/x.yaml: search.asha.grace_period: Input should be greater than or equal to 1 (got 0)
    sweeps/x.yaml: unknown key 'grace_perod' in search.asha; allowed: clock, grace_period, ...

Two kinds of dotted key path appear in a spec:
- search-space keys (`search.space`, `apply_params`) name what a trial may vary:
  `model.<knob>`, `model.<knob>.<i>` (element i of a list knob), `pretrain.<field>`,
  `finetune.<field>` (StageSpec fields) and `transfer.keep_head`;
- variant keys (`variants`, `apply_variant`) are paths into the spec itself:
  `model.name`, `model.params.<knob>[.<i>]`, `data.pretrain`, `stages.finetune.epochs`, ...

Read top to bottom: schema -> loading and errors -> key paths -> model checks ->
cross-field checks -> trial configs (apply_params, apply_variant) -> sampling.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import math
import os
import re
import sys
import tempfile
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ecgtune.models import MODEL_FAMILIES, PRESETS, create_model, model_names
from ecgtune.targets import check_targets
from ecgtune.train import TrainConfig

if TYPE_CHECKING:
    import optuna

SPEC_VERSION = 1

# ============================================================================================== schema


class Strict(BaseModel):
    # NaN and infinity are never a valid setting (a NaN bound would validate every comparison as False).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(Strict):
    """A registered model (family or preset) plus fixed constructor arguments."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class StoreSpec(Strict):
    """A cached store: a path, or one of the embedded demo stores built on first use.

    `path` may use environment variables (`${ECGTUNE_DATA}/ptbxl`); a relative
    path is taken relative to ECGTUNE_DATA (default: ./data of the directory the
    command runs in), never silently to wherever a Ray worker happens to start.
    """

    path: str | None = None
    demo: Literal["deepfake", "ptbxl"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StoreSpec:
        if (self.path is None) == (self.demo is None):
            got = "both" if self.path is not None else "neither"
            raise ValueError(f"give exactly one of 'path' or 'demo' (got {got})")
        return self


class DataSpec(Strict):
    pretrain: StoreSpec | None = None  # None: no pretraining stage (train on PTB-XL only)
    finetune: StoreSpec


class StageSpec(Strict):
    """TrainConfig fields of one stage (epochs, lr, batch size, ...); the bounds are TrainConfig's."""

    epochs: int = Field(ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    loss: Literal["l1", "huber"] = "l1"
    huber_delta: float = Field(1.0, gt=0)
    samples_per_epoch: int | None = Field(None, ge=1)
    freeze_backbone_epochs: int = Field(0, ge=0)
    eval_batch_size: int = Field(256, ge=1)
    amp: bool = True
    compile: bool = False

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(**self.model_dump(), seed=seed)


class TransferSpec(Strict):
    keep_head: bool = False  # False: a new head for PTB-XL targets/statistics


class StagesSpec(Strict):
    pretrain: StageSpec = StageSpec(epochs=0)
    finetune: StageSpec
    transfer: TransferSpec = TransferSpec()


class Distribution(Strict):
    """One searched parameter, as an Optuna distribution.

    type int/float: low, high, optional log or step. type categorical: choices.
    `divides`: (categorical) keep only choices that divide the value of another
    searched or fixed parameter — e.g. ViT heads must divide the embedding dim.
    `same_as`: not sampled; copies another parameter (e.g. tied ResNet widths).
    """

    type: Literal["int", "float", "categorical", "same_as"]
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None
    divides: str | None = None
    same_as: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Distribution:
        given = [
            k
            for k in ("low", "high", "step", "choices", "divides", "same_as")
            if getattr(self, k) is not None
        ]
        given += ["log"] if self.log else []
        allowed = {
            "int": ["low", "high", "log", "step"],
            "float": ["low", "high", "log", "step"],
            "categorical": ["choices", "divides"],
            "same_as": ["same_as"],
        }[self.type]
        if extra := [k for k in given if k not in allowed]:
            raise ValueError(
                f"{', '.join(extra)} not allowed with type {self.type}; allowed: {', '.join(allowed)}"
            )
        if self.type in ("int", "float"):
            _check_range(self)
        elif self.type == "categorical":
            _check_choices(self)
        elif not self.same_as:
            raise ValueError("type same_as needs 'same_as: <key of search.space or fixed parameter>'")
        return self


def _check_range(d: Distribution) -> None:
    if d.low is None or d.high is None:
        raise ValueError(f"type {d.type} needs both low and high")
    if d.type == "int":
        for k in ("low", "high", "step"):
            v = getattr(d, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"type int needs whole numbers; {k}={v!r}")
    if d.low > d.high:
        raise ValueError(f"empty range low={d.low} > high={d.high}")
    if d.log and d.low <= 0:
        raise ValueError(f"log scale needs low > 0 (got low={d.low})")
    if d.step is not None:
        if d.step <= 0:
            raise ValueError(f"step must be > 0 (got step={d.step})")
        if d.log:
            raise ValueError("step cannot be combined with log (Optuna supports one or the other)")
        if d.type == "int" and (d.high - d.low) % d.step:
            raise ValueError(f"high={d.high} is not low={d.low} plus a multiple of step={d.step}")


def _check_choices(d: Distribution) -> None:
    if not d.choices:
        raise ValueError("type categorical needs a non-empty list 'choices'")
    for c in d.choices:
        if not isinstance(c, (type(None), bool, int, float, str)):
            raise ValueError(f"choice {c!r} is not a scalar; Optuna stores only null, bool, int, float, str")
    seen: list[Any] = []
    for c in d.choices:
        if any(type(c) is type(s) and c == s for s in seen):
            raise ValueError(f"choice {c!r} appears twice")
        seen.append(c)
    if d.divides and not all(_is_int(c) and c > 0 for c in d.choices):
        raise ValueError(f"divides needs positive integer choices (got {d.choices})")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class ASHASpec(Strict):
    # The epochs ASHA's rungs count. "finetune": fine-tuning epochs only, so every trial pretrains to
    # the end and is first judged after fine-tuning; "all": every epoch of both stages, so rungs can
    # fall in pretraining, where the objective is the pretrained model read out zero-shot on PTB-XL.
    # On the demo data that zero-shot value did not rank trials as their final objective does
    # (Spearman 0.04-0.08 over 40 trials, docs/benchmarks.md part 4): hence the default.
    clock: Literal["finetune", "all"] = "finetune"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2, gt=1)
    brackets: int = Field(1, ge=1)


class SearcherSpec(Strict):
    algorithm: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    n_startup_trials: int = Field(4, ge=0)


class SearchSpec(Strict):
    space: dict[str, Distribution]
    num_samples: int = Field(ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    searcher: SearcherSpec = SearcherSpec()
    asha: ASHASpec | None = ASHASpec()  # None: no early stopping


class ResourcesSpec(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)
    # A trial Ray grants a GPU must find a CUDA device, or it fails at once: a CPU build of torch on a
    # GPU node would otherwise run the whole sweep 50-100x slower on paid, idle GPUs. True: run such
    # trials on the CPU anyway (each trial's device is in its results and the report).
    cpu_fallback: bool = False


class RunSpec(Strict):
    storage_path: str = "runs"
    max_failures: int = Field(1, ge=0)
    checkpoints_kept: int = Field(2, ge=1)
    # False: a fresh worker process per trial, whose exit hands all its (GPU) memory back. True: Tune
    # keeps the process for the next trial, saving its start-up (~5 s per trial here, bench/
    # ray_overhead.py); the trial then empties torch's CUDA cache first and reports what is left.
    reuse_actors: bool = False


NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class Spec(Strict):
    """A sweep spec (with `search`) or a standalone training config (without).

    `variants` (optional): named sets of overrides, each a mapping of spec paths
    (`model.name`, `data.pretrain`, `stages.finetune.epochs`, ...) to values. Each
    variant is one fixed experiment: the driver grids over the names, and each
    trial trains `apply_variant(spec, name)`. With variants, `search.space` is
    empty and `search.asha` null (fixed experiments run to the end).
    """

    version: int = SPEC_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    model: ModelSpec
    targets: list[str] = ["hr", "pr", "qrs", "qt"]
    data: DataSpec
    stages: StagesSpec
    seed: int = 0
    search: SearchSpec | None = None
    variants: dict[str, dict[str, Any]] | None = None
    resources: ResourcesSpec = ResourcesSpec()
    run: RunSpec = RunSpec()
    # Written by `ecgtune export`: where a config came from. Free-form, never read back into a run.
    origin: dict[str, Any] | None = None

    @property
    def pretrain_epochs(self) -> int:
        """Epochs a run of this spec pretrains: none without a pretraining store. The one rule for a
        run's planned length; trials, reports, the searcher and final training all ask here."""
        return self.stages.pretrain.epochs if self.data.pretrain is not None else 0

    @property
    def total_epochs(self) -> int:
        """Epochs a run of this spec trains, both stages."""
        return self.pretrain_epochs + self.stages.finetune.epochs

    def network_config(self) -> dict[str, Any]:
        """The model registry's config of this spec's network (`ecgtune.models.build_model`): the one
        place a spec becomes a model, for trials, final training, checkpoints' metadata and benchmarks."""
        return {"name": self.model.name, **self.model.params, "num_outputs": len(self.targets)}


# ================================================================================ loading and errors


class SpecError(ValueError):
    """A spec that cannot run. `problems` holds one 'key.path: what is wrong' line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = str(source)
        self.problems = list(problems)
        super().__init__("\n".join(f"{self.source}: {p}" for p in self.problems))


# PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string; people write learning rates that way.
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no Python tags) that reads `1e-3` as a float and refuses duplicate keys."""


class _SpecDumper(yaml.SafeDumper):
    """yaml.SafeDumper that quotes strings _SpecLoader would read as floats, so round trips hold."""


for _cls in (_SpecLoader, _SpecDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


def _no_duplicate_keys(loader: _SpecLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (a later value would silently win)", key_node.start_mark
            )
    return loader.construct_mapping(node)


_SpecLoader.add_constructor("tag:yaml.org,2002:map", _no_duplicate_keys)


# What a spec may cost to read, checked on the YAML event stream before any object is built: a
# hostile or broken file (deep nesting, aliases that expand exponentially) must fail in milliseconds.
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_DEPTH = 32
MAX_SPEC_NODES = 100_000


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and check a spec file (YAML, safe loader: no Python tags). Raises SpecError naming the file."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(source, [f"larger than {MAX_SPEC_BYTES} bytes; a spec is a short YAML file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(source, [f"not UTF-8 text (byte {exc.start} cannot be decoded)"]) from None
    try:
        _check_reading_cost(text)
        data = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader: `!!python/...` tags are refused
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"not valid YAML: {_yaml_problem(exc)}"]) from None
    except _Problem as exc:
        raise SpecError(source, [str(exc)]) from None
    return spec_from_dict(data, source=source)


def _check_reading_cost(text: str) -> None:
    """Refuse (_Problem) YAML nested deeper than MAX_SPEC_DEPTH or expanding to more than
    MAX_SPEC_NODES nodes once aliases are resolved. Reads events only: nothing is built."""
    stack: list[list[Any]] = [[None, 0]]  # per open collection: [anchor, nodes in it so far]
    expanded: dict[str, int] = {}  # anchor -> nodes its value expands to
    for event in yaml.parse(text, Loader=_SpecLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) > MAX_SPEC_DEPTH:
                mark = event.start_mark
                raise _Problem(
                    f"nested deeper than {MAX_SPEC_DEPTH} levels (line {mark.line + 1}); "
                    "a spec is a few levels deep"
                )
            stack.append([event.anchor, 1])
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, size = stack.pop()
            if anchor is not None:
                expanded[anchor] = size
            stack[-1][1] += size
        elif isinstance(event, yaml.ScalarEvent):
            stack[-1][1] += 1
            if event.anchor is not None:
                expanded[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            stack[-1][1] += expanded.get(event.anchor, 1)
        else:
            continue
        if sum(size for _, size in stack) > MAX_SPEC_NODES:
            mark = event.start_mark
            raise _Problem(
                f"expands to more than {MAX_SPEC_NODES} values (line {mark.line + 1}: aliases repeated "
                "inside aliases?); a spec is a few hundred"
            )


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


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{exc.problem or exc.context}{where}"
    return str(exc).replace("\n", " ")


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
        raise SpecError(source, _format_validation_error(exc)) from None
    check_spec(spec, source=source)
    return spec


def dump_spec(spec: Spec, path: str | os.PathLike[str]) -> None:
    """Write `spec` as YAML that load_spec reads back to an equal Spec; atomic (temp file + rename)."""
    path = Path(path)
    text = yaml.dump(
        spec.model_dump(mode="json"), Dumper=_SpecDumper, sort_keys=False, default_flow_style=False
    )
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp would leave 0600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- pydantic error lines


def _format_validation_error(exc: ValidationError) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc, union = _trim_loc(err["loc"])
        path = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            parent, key = loc[:-1], str(loc[-1])
            where = f"in {'.'.join(str(p) for p in parent)}" if parent else "at top level"
            line = f"unknown key {key!r} {where}{_allowed_hint(key, _keys_at(parent))}"
        elif union is not None:
            line = f"{path}: expected {_type_name(union)}{_got(err['input'])}"
        elif err["type"] == "missing":
            parent = ".".join(str(p) for p in loc[:-1])
            line = f"missing required key {str(loc[-1])!r} " + (f"in {parent}" if parent else "at top level")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            line = f"{path}: {msg}" + ("" if err["type"] == "value_error" else _got(err["input"]))
        if line not in lines:
            lines.append(line)
    return lines


def _got(value: Any) -> str:
    if isinstance(value, Mapping):
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _trim_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Follow an error location through the schema. Pydantic appends the member tried ('int',
    'float') to a union's location; cut it off and return the union type to name in the message."""
    tp: Any = Spec
    for i, part in enumerate(loc):
        tp = _unwrap_optional(tp)
        origin = typing.get_origin(tp)
        if _is_model(tp):
            if part not in tp.model_fields:
                return loc, None
            tp = tp.model_fields[part].annotation
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            return loc[:i], tp
        else:
            return loc, None
    return loc, None


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    tp: Any = Spec
    for part in loc:
        tp = _unwrap_optional(tp)
        if _is_model(tp) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
    tp = _unwrap_optional(tp)
    return list(tp.model_fields) if _is_model(tp) else []


def _allowed_hint(name: str, allowed: list[str]) -> str:
    if not allowed:
        return ""
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    return f"; allowed: {', '.join(allowed)}" + (f" (did you mean {close[0]!r}?)" if close else "")


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", repr(tp))


def _strict_problem(tp: Any, value: Any) -> tuple[str, str] | None:
    """(where inside the value, why) `value` is not of type `tp` in pydantic's strict mode, or None.

    Strict: a float is no int (a float range over an int knob would fail mid-sweep), a string is no
    number. A YAML list stands for a tuple.
    """
    if typing.get_origin(_unwrap_optional(tp)) is tuple and isinstance(value, list):
        value = tuple(value)
    try:
        _adapter(tp).validate_python(value, strict=True)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        return ".".join(str(p) for p in err["loc"]), f"{err['msg']}{_got(err['input'])}"
    return None


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


# ========================================================================================= key paths

STAGE_PREFIXES = ("pretrain", "finetune")
# Set by the run, not by a spec: one output per target, 8 leads, 10 s at 500 Hz.
RESERVED_KNOBS = ("in_channels", "num_outputs", "signal_length")
SPACE_PREFIXES = "model.<knob>, model.<knob>.<i>, pretrain.<field>, finetune.<field>, transfer.keep_head"


class _Problem(Exception):
    """One problem found while reading a key path or value; the caller adds where it is."""


def _family(model_name: str) -> str:
    if model_name in MODEL_FAMILIES:
        return model_name
    if model_name in PRESETS:
        return PRESETS[model_name][0]
    raise _Problem(f"unknown model {model_name!r}; known: {', '.join(model_names())}")


@functools.cache
def _knob_hints(family: str) -> dict[str, Any]:
    """Constructor keyword -> type hint, for the knobs a spec may set."""
    hints = typing.get_type_hints(MODEL_FAMILIES[family].__init__)
    return {k: v for k, v in hints.items() if k != "return" and k not in RESERVED_KNOBS}


def _knob_defaults(model_name: str) -> dict[str, Any]:
    """Every knob's value when a spec does not set it: the preset's, else the constructor default."""
    family = _family(model_name)
    signature = inspect.signature(MODEL_FAMILIES[family])
    defaults = {k: p.default for k, p in signature.parameters.items() if p.default is not p.empty}
    if model_name in PRESETS:
        defaults.update(PRESETS[model_name][1])
    return {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}


def _check_knob(model_name: str, knob: str) -> None:
    family = _family(model_name)
    if knob in RESERVED_KNOBS:
        raise _Problem(f"{knob} is set by the run (8 leads, 5000 samples, one output per target), not a knob")
    allowed = list(_knob_hints(family))
    if knob not in allowed:
        what = family if model_name == family else f"{model_name} (a {family})"
        raise _Problem(f"unknown knob for {what}{_allowed_hint(knob, allowed)}")


def _parse_key(key: str, model_name: str) -> tuple[str, str, int | None]:
    """A search-space key -> (section, field, list index). Section: model, pretrain, finetune, transfer."""
    parts = key.split(".")
    head = parts[0]
    if head == "model" and len(parts) in (2, 3):
        _check_knob(model_name, parts[1])
        if len(parts) == 3:
            if not parts[2].isdigit():
                raise _Problem(f"list index {parts[2]!r} is not a non-negative integer")
            return "model", parts[1], int(parts[2])
        return "model", parts[1], None
    if head in STAGE_PREFIXES and len(parts) == 2:
        if parts[1] not in StageSpec.model_fields:
            raise _Problem(
                f"unknown stage field {parts[1]!r}{_allowed_hint(parts[1], list(StageSpec.model_fields))}"
            )
        return head, parts[1], None
    if head == "transfer" and len(parts) == 2:
        if parts[1] not in TransferSpec.model_fields:
            raise _Problem(
                f"unknown transfer field {parts[1]!r}; allowed: {', '.join(TransferSpec.model_fields)}"
            )
        return head, parts[1], None
    if head in ("model", *STAGE_PREFIXES, "transfer"):
        raise _Problem(f"malformed key; allowed forms: {SPACE_PREFIXES}")
    raise _Problem(f"unknown prefix {head!r}; allowed: {SPACE_PREFIXES}")


def _base_value(d: Mapping[str, Any], key: str) -> Any:
    """The value `key` has in the dumped spec `d` when nothing overrides it."""
    section, field, index = _parse_key(key, d["model"]["name"])
    if section == "model":
        params = d["model"]["params"]
        value = params[field] if field in params else _knob_defaults(d["model"]["name"])[field]
        if index is None:
            return value
        if not isinstance(value, (list, tuple)):
            raise _Problem(f"{field} is {value!r}, not a list; it has no element {index}")
        if index >= len(value):
            raise _Problem(f"index {index} out of range: {field} is {list(value)} ({len(value)} elements)")
        return value[index]
    return d["stages"][section][field]


def _apply(d: dict[str, Any], key: str, value: Any) -> None:
    """Set search-space key `key` to `value` in the dumped spec `d` (in place)."""
    section, field, index = _parse_key(key, d["model"]["name"])
    if section == "model":
        params = d["model"]["params"]
        if index is not None:
            _base_value(d, key)  # raises if the knob is no list or is too short
            elements = list(params[field] if field in params else _knob_defaults(d["model"]["name"])[field])
            elements[index] = value
            value = elements
        params[field] = value
        return
    model = StageSpec if section in STAGE_PREFIXES else TransferSpec
    if problem := _strict_problem(model.model_fields[field].annotation, value):
        raise _Problem(problem[1])
    d["stages"][section][field] = value


# ====================================================================================== model checks


def _model_problems(name: str, params: Mapping[str, Any], num_outputs: int) -> list[str]:
    """Unknown model or knobs, knob values of the wrong type, and what the constructor rejects."""
    try:
        family = _family(name)
    except _Problem as p:
        return [f"model.name: {p}"]
    problems = []
    hints = _knob_hints(family)
    for knob, value in params.items():
        try:
            _check_knob(name, knob)
        except _Problem as p:
            problems.append(f"model.params.{knob}: {p}")
            continue
        if value is not None and (problem := _strict_problem(hints[knob], value)):
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
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                create_model(name, **params, num_outputs=num_outputs)
            _BUILD_ERRORS[key] = None
        except Exception as exc:  # the constructor's message is the explanation we pass on
            _BUILD_ERRORS[key] = str(exc) or type(exc).__name__
    return _BUILD_ERRORS[key]


# ================================================================================= cross-field checks


def check_spec(spec: Spec, source: str = "<spec>") -> None:
    """Every check that needs more than one field; raises SpecError with one line per problem.

    load_spec and spec_from_dict call it; code that builds a Spec by hand should too.
    """
    problems = _version_problems(spec) + _run_problems(spec)
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


def _run_problems(spec: Spec) -> list[str]:
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


def asha_max_t(spec: Spec, asha: ASHASpec) -> int:
    """The length of ASHA's clock: fine-tuning epochs, or every epoch of both stages."""
    return spec.stages.finetune.epochs if asha.clock == "finetune" else spec.total_epochs


def _search_problems(spec: Spec, search: SearchSpec, deep: bool) -> list[str]:
    """Search-space keys, same_as/divides relations, ASHA against epochs, and (when `deep` and
    everything else holds) a meta-device build for every searched value, one parameter at a time."""
    space = search.space
    base = _trial_base(spec)
    problems = []
    pretraining = spec.total_epochs > spec.stages.finetune.epochs
    for key in space:
        if key.startswith("model.") and spec.model.name not in model_names():
            continue  # reported once, as model.name
        try:
            section, field, _ = _parse_key(key, spec.model.name)
            _base_value(base, key)
        except _Problem as p:
            problems.append(f"search.space.{key}: {p}")
            continue
        if field == "epochs":
            problems.append(
                f"search.space.{key}: epochs set the clock ASHA stops trials on and cannot be searched; "
                "fix them (compare lengths with variants)"
            )
        elif section in ("pretrain", "transfer") and not pretraining:
            problems.append(
                f"search.space.{key}: this spec never pretrains (data.pretrain null or "
                "stages.pretrain.epochs 0), so the value would have no effect"
            )
    if not problems:
        problems += _relation_problems(space, base)
    if search.asha is not None and search.asha.grace_period > asha_max_t(spec, search.asha):
        if search.asha.clock == "all":
            pre = spec.total_epochs - spec.stages.finetune.epochs
            counted = (
                f"the {spec.total_epochs} epochs a trial trains (pretrain {pre} + finetune "
                f"{spec.stages.finetune.epochs})"
            )
        else:
            counted = f"the {spec.stages.finetune.epochs} fine-tuning epochs ASHA counts (search.asha.clock)"
        problems.append(f"search.asha.grace_period: {search.asha.grace_period} is more than {counted}")
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
        problems += _value_problems(space, base)
    return problems


def _trial_base(spec: Spec) -> dict[str, Any]:
    """The spec as a plain dict, without search or variants: what one trial trains before overrides."""
    d = spec.model_dump(mode="json")
    d["search"] = None
    d["variants"] = None
    return d


def _refs(dist: Distribution) -> list[str]:
    return [r for r in (dist.same_as, dist.divides) if r]


def _dependency_order(space: Mapping[str, Distribution]) -> list[str]:
    """Keys with every same_as/divides target that is itself searched placed before them."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(key: str, chain: list[str]) -> None:
        if state.get(key) == "done":
            return
        if state.get(key) == "open":
            raise _Problem(f"same_as/divides cycle: {' -> '.join([*chain, key])}")
        state[key] = "open"
        for ref in _refs(space[key]):
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
        raise _Problem(f"has {len(values)} values; at most {limit} can be checked")
    return list(values)


def _relation_problems(space: Mapping[str, Distribution], base: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, dist in space.items():
        for ref in _refs(dist):
            if ref == key:
                problems.append(f"search.space.{key}: refers to itself")
                continue
            if ref not in space:
                try:
                    _base_value(base, ref)
                except _Problem as p:
                    problems.append(
                        f"search.space.{key}: {ref!r} is neither a key of search.space "
                        f"nor a fixed parameter ({p})"
                    )
    if problems:
        return problems
    try:
        _dependency_order(space)
    except _Problem as p:
        return [f"search.space: {p}"]
    for key, dist in space.items():
        if not dist.divides:
            continue
        parent = dist.divides
        try:
            values = _possible_values(space, parent) if parent in space else [_base_value(base, parent)]
        except _Problem as p:
            problems.append(f"search.space.{key}: divides {parent}, which {p}")
            continue
        if values is None or not all(_is_int(v) for v in values):
            problems.append(f"search.space.{key}: divides {parent}, which takes non-integer values")
            continue
        empty = [v for v in values if not any(v % c == 0 for c in dist.choices or [])]
        if empty:
            problems.append(
                f"search.space.{key}: no choice in {dist.choices} divides {parent}="
                f"{', '.join(map(str, empty[:5]))}{' ...' if len(empty) > 5 else ''}"
            )
    return problems


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
        return values[ref] if ref in space else _base_value(base, ref)

    for key in _dependency_order(space):
        dist = space[key]
        if key in assigned:
            values[key] = assigned[key]
        elif dist.type == "same_as":
            values[key] = current(dist.same_as)
        elif dist.divides:
            parent = current(dist.divides)
            ok = [c for c in dist.choices or [] if parent % c == 0]
            own = _base_value(base, key)
            values[key] = own if own in ok else ok[0]
        else:
            values[key] = _base_value(base, key)
    return values


def _config_problem(base: Mapping[str, Any], values: Mapping[str, Any]) -> str | None:
    """Why the trial config `base` + `values` cannot run (first reason), or None."""
    d = copy.deepcopy(dict(base))
    try:
        for key, value in values.items():
            _apply(d, key, value)
    except _Problem as p:
        return str(p)
    try:
        spec = Spec.model_validate(d)
    except ValidationError as exc:
        return _format_validation_error(exc)[0]
    problems = _run_problems(spec)
    return problems[0].split(": ", 1)[1] if problems else None


def _value_problems(space: Mapping[str, Distribution], base: Mapping[str, Any]) -> list[str]:
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
                elif _base_value(base, parent) % value:
                    continue
            if problem := _config_problem(base, _resolve(space, base, assigned)):
                problems.append(f"search.space.{key}: {what} {value!r} is impossible: {problem}")
                break  # one line per key is enough to act on
    return problems


def _root(space: Mapping[str, Distribution], key: str) -> str:
    while key in space and space[key].type == "same_as":
        key = space[key].same_as or key
    return key


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
    d = _trial_base(spec)
    params = {k: _plain(v) for k, v in params.items()}
    problems = []
    for key, value in params.items():
        try:
            _apply(d, key, value)
        except _Problem as p:
            problems.append(f"{key}: {p}")
    source = f"{spec.name} with params {params}"
    if problems:
        raise SpecError(source, problems)
    space = spec.search.space if spec.search is not None else {}
    for key in _dependency_order(space):
        dist = space[key]
        if dist.type == "same_as" and key not in params:
            _apply(d, key, _base_value(d, dist.same_as))  # d already holds the target's new value
    return spec_from_dict(d, source=source)


def _plain(value: Any) -> Any:
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
    d = _trial_base(spec)
    d["name"] = f"{spec.name}.{name}"
    problems = []
    # The model first: knob paths are checked against the variant's model, wherever they are written.
    overrides = sorted(spec.variants[name].items(), key=lambda kv: kv[0] not in ("model", "model.name"))
    for path, value in overrides:
        try:
            _set_path(d, path, value)
        except _Problem as p:
            problems.append(f"{path}: {p}")
    source = f"variant {name!r} of {spec.name}"
    if problems:
        raise SpecError(source, problems)
    return spec_from_dict(d, source=source)


def _set_path(d: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    if parts[0] not in VARIANT_ROOTS:
        raise _Problem(
            f"a variant cannot set {parts[0]!r}; variant keys start with: {', '.join(VARIANT_ROOTS)}"
        )
    if parts[:2] == ["model", "params"] and len(parts) in (3, 4):
        _apply(d, ".".join(["model", *parts[2:]]), value)  # list knobs need their defaults
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
            raise _Problem(f"{'.'.join(parts[: i + 1])} is {node!r}; cannot set {part!r} in it")
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    else:
        raise _Problem(f"{'.'.join(parts[:-1])} is {node!r}; cannot set {last!r} in it")


# ========================================================================================== sampling


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
        order = _dependency_order(space)
    except _Problem as p:
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
    base = _trial_base(spec)
    space = spec.search.space
    return {ref: _base_value(base, ref) for dist in space.values() for ref in _refs(dist) if ref not in space}


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


# ============================================================================================ stores


DATA_ENV = "ECGTUNE_DATA"
# Ray's job supervisor sets this in the environment of a submitted job's entrypoint (Ray 2.52-2.60,
# dashboard/modules/job/job_supervisor.py `_get_driver_env_vars`); it removes RAY_JOB_ID from it, and
# RAY_ADDRESS alone is also set by people who run a driver of their own against a cluster.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
RUNTIME_ENV_HINT = (
    "set it in the job's runtime env: `env_vars: {ECGTUNE_DATA: /mnt/ecgtune-data}` in "
    "cluster/runtime_env.yaml (`--runtime-env cluster/runtime_env.yaml`), or "
    '`--runtime-env-json \'{"env_vars": {"ECGTUNE_DATA": "/abs/path"}}\'`'
)


class DataRootError(ValueError):
    """The data root cannot be trusted where ecgtune runs (a relative root inside a Ray job)."""


class StoreNotFoundError(FileNotFoundError):
    """A store a spec names is not on this machine (no finished store at its path)."""


def running_as_ray_job() -> bool:
    """True in the entrypoint of `ray job submit`, whose working directory is a temporary copy."""
    return RAY_JOB_ENV in os.environ


def data_root() -> Path:
    """$ECGTUNE_DATA, default ./data; inside a Ray job it must be absolute (the job's working
    directory is a temporary copy: stores below it would be rebuilt, or missing, on every submission)."""
    value = os.environ.get(DATA_ENV)
    if running_as_ray_job() and not (value and Path(value).expanduser().is_absolute()):
        got = f"{DATA_ENV}={value!r} is relative" if value else f"{DATA_ENV} is not set (default ./data)"
        raise DataRootError(
            f"running as a Ray job in a temporary copy of the submitted directory ({Path.cwd()}), and {got}: "
            f"the stores would be looked for inside that copy. Point {DATA_ENV} at the absolute path where "
            f"the stores live on the cluster: {RUNTIME_ENV_HINT}"
        )
    return Path(value or "data").expanduser().resolve()


def resolve_store(store: StoreSpec) -> Path:
    """The directory of a store (not checked; see `require_store`). The embedded demo stores are
    built on first use (once per node, with a progress line), except inside a Ray job, which only
    uses demo stores already built below an absolute $ECGTUNE_DATA and fails at once otherwise."""
    if store.demo is not None:
        from ecgtune.data.demo import ensure_demo_store
        from ecgtune.data.store import PROVENANCE_FILE

        root = data_root() / "demo"
        if running_as_ray_job():
            return _check_store(root / store.demo, f"ecgtune data demo --root {root}")
        if not all((root / name / PROVENANCE_FILE).is_file() for name in ("deepfake", "ptbxl")):
            print(
                f"ecgtune: building the demo stores in {root} (first use: a few minutes on 2 cores; "
                f"`ecgtune data demo --root {root}` builds them ahead)",
                file=sys.stderr,
                flush=True,
            )
        return ensure_demo_store(store.demo, root)
    path = Path(os.path.expandvars(store.path)).expanduser()
    return path if path.is_absolute() else data_root() / path


def require_store(store: StoreSpec) -> Path:
    """`resolve_store`, and the store must be there: a missing one fails at once, naming the path."""
    path = resolve_store(store)
    if store.demo:
        return _check_store(path, f"ecgtune data demo --root {path.parent}")
    return _check_store(path, f"ecgtune data ptbxl|deepfake|generate ... -o {path}")


def _check_store(path: Path, build: str) -> Path:
    from ecgtune.data.store import PROVENANCE_FILE

    if not (path / PROVENANCE_FILE).is_file():
        where = f" ({DATA_ENV}={os.environ[DATA_ENV]})" if DATA_ENV in os.environ else ""
        state = "is not a finished store" if path.exists() else "does not exist"
        raise StoreNotFoundError(
            f"data store {path}{where} {state} (no {PROVENANCE_FILE}); build it there first: `{build}`"
        )
    return path


__all__ = [
    "SPEC_VERSION",
    "ASHASpec",
    "DataRootError",
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
    "StoreNotFoundError",
    "StoreSpec",
    "TransferSpec",
    "apply_params",
    "apply_variant",
    "asha_max_t",
    "check_spec",
    "data_root",
    "describe_space",
    "dump_spec",
    "fixed_values",
    "load_spec",
    "make_sampler",
    "require_store",
    "resolve_store",
    "running_as_ray_job",
    "sample_params",
    "spec_from_dict",
    "trial_params",
]


def content_key_of_spec(spec: Spec) -> str:
    """What a trained model depends on besides its data: model, targets, stages, seed.

    Names, resources, storage, search and provenance do not change the trained model; the data
    is keyed separately by each store's own content key.
    """
    from ecgtune.data.store import content_key

    d = spec.model_dump(mode="json")
    return content_key({k: d[k] for k in ("model", "targets", "stages", "seed")})

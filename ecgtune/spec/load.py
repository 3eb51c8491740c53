"""Spec files: YAML in (`load_spec`, with `--set KEY=VALUE` overrides) and out (`dump_spec`), safely
and cheaply.

A safe loader (no Python tags) that reads `1e-3` as a float and refuses duplicate keys; what a file may
cost to read (size, nesting, alias expansion) is checked before any object is built. Errors name the
file: `sweeps/x.yaml: not valid YAML: ... (line 3, column 5)`. Overrides are applied to what the file
reads as, before any check, so a misspelt or out-of-range override fails exactly as it would in the file.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ecgtune.spec.configs import spec_from_dict
from ecgtune.spec.errors import SpecError, SpecProblem
from ecgtune.spec.schema import Spec

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


def load_spec(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Spec:
    """Read and check a spec file (YAML, safe loader: no Python tags). Raises SpecError naming the file.

    `overrides` are `KEY=VALUE` settings (`apply_overrides`), applied before the checks; errors then
    name the file and the overrides.
    """
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
        data = _read_yaml(text)
        if overrides:
            data = apply_overrides(data, overrides)
    except SpecProblem as exc:
        raise SpecError(source, [str(exc)]) from None
    if overrides:  # what is checked next is the file and the overrides together
        source = f"{source} with --set {' '.join(overrides)}"
    return spec_from_dict(data, source=source)


def _read_yaml(text: str) -> Any:
    """What YAML text reads as; SpecProblem for invalid YAML or YAML too costly to read."""
    try:
        _check_reading_cost(text)
        return yaml.load(text, Loader=_SpecLoader)  # a SafeLoader: `!!python/...` tags are refused
    except yaml.YAMLError as exc:
        raise SpecProblem(f"not valid YAML: {_yaml_problem(exc)}") from None


def apply_overrides(data: Any, overrides: Sequence[str]) -> Any:
    """`data` (a spec file as read) with each `KEY=VALUE` of `overrides` set, in order; `data` is left
    alone. KEY is a dotted path (`search.num_samples`, `stages.finetune.epochs`, `model.params.widths.0`);
    VALUE is read as YAML, like the file (`1e-3`, `true`, `[8, 8]`, `{path: ptbxl}`; empty: null).

    Only the path is checked here (SpecProblem: each step must be a mapping, or a list and an index in
    it); a key the spec does not know, or a value it does not take, is refused by the spec's own checks
    afterwards, as in a file. A key that itself holds dots (a search-space key such as
    `model.block_kernel`) matches when the spec has it: `search.space.model.block_kernel.choices=[9, 15]`.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return data  # not a mapping at all: spec_from_dict says so, naming what it got
    data = copy.deepcopy(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        try:
            if not sep or any(not part.strip() for part in key.split(".")):
                raise SpecProblem("expected KEY=VALUE with a dotted KEY, e.g. search.num_samples=4")
            _set_path(data, [part.strip() for part in key.split(".")], _read_yaml(text))
        except SpecProblem as exc:
            raise SpecProblem(f"--set {override}: {exc}") from None
    return data


def _set_path(node: Any, parts: list[str], value: Any) -> None:
    where: list[str] = []
    while True:
        if isinstance(node, list):
            if not parts[0].isdigit() or int(parts[0]) >= len(node):
                at = ".".join(where)
                raise SpecProblem(f"{at} is a list of {len(node)}; {parts[0]!r} is not an index in it")
            take = 1
        elif isinstance(node, dict):
            # The longest run of parts that is a key here, so dotted keys (search.space's) are found.
            take = next((n for n in range(len(parts), 1, -1) if ".".join(parts[:n]) in node), 1)
        else:
            raise SpecProblem(f"{'.'.join(where)} is {node!r}, not a mapping or list")
        step, parts = ".".join(parts[:take]), parts[take:]
        index: Any = int(step) if isinstance(node, list) else step
        where.append(step)
        if not parts:
            node[index] = value
            return
        if isinstance(node, dict) and node.get(index) is None:
            node[index] = {}  # a section the file leaves out (or null) is filled in
        node = node[index]


def _check_reading_cost(text: str) -> None:
    """Refuse (SpecProblem) YAML nested deeper than MAX_SPEC_DEPTH or expanding to more than
    MAX_SPEC_NODES nodes once aliases are resolved. Reads events only: nothing is built."""
    stack: list[list[Any]] = [[None, 0]]  # per open collection: [anchor, nodes in it so far]
    expanded: dict[str, int] = {}  # anchor -> nodes its value expands to
    for event in yaml.parse(text, Loader=_SpecLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) > MAX_SPEC_DEPTH:
                mark = event.start_mark
                raise SpecProblem(
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
            raise SpecProblem(
                f"expands to more than {MAX_SPEC_NODES} values (line {mark.line + 1}: aliases repeated "
                "inside aliases?); a spec is a few hundred"
            )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{exc.problem or exc.context}{where}"
    return str(exc).replace("\n", " ")


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

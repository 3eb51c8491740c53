"""Where ecgtune may read and write: the one owner of path safety.

Researchers point ecgtune at datasets that took days to download. Two rules keep them safe:

* **Nothing a user owns is ever deleted or overwritten.** Every command that writes a
  directory claims it first (`claim_output_dir`): the path must be absent, an empty directory,
  or a directory ecgtune itself marked as its own output of the same kind (a `.ecgtune` marker
  file). Anything else — a non-empty directory ecgtune did not write, a file, an input dataset,
  a directory inside an input or one that contains it — is refused before any work, with one
  line naming the path and why. Only such a marked directory may later be replaced.
* **No file outside a dataset's root is ever opened.** A path taken from a data file
  (`filename_hr` in ptbxl_database.csv, a patid in a DeepFake ground-truth CSV, a signal file
  named in a WFDB header) is accepted only if it resolves — after `..` and symlinks — inside
  the dataset root (`inside_root`); otherwise the record is skipped under its own reason.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

MARKER_FILE = ".ecgtune"
# What ecgtune writes into a directory it owns; a claim for one kind never takes over another.
OUTPUT_KINDS: tuple[str, ...] = ("store", "demo", "final", "report", "simulated-ptbxl")


class OutputPathError(ValueError):
    """An output path ecgtune refuses to write to (it would overwrite or delete something)."""


def marker_kind(path: str | os.PathLike) -> str | None:
    """The kind of ecgtune output `path` is (its marker's "kind"), or None if ecgtune did not mark it."""
    marker = Path(path) / MARKER_FILE
    if not marker.is_file():
        return None
    try:
        kind = json.loads(marker.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in OUTPUT_KINDS else None


def write_marker(directory: str | os.PathLike, kind: str) -> None:
    """Mark `directory` as ecgtune's own output of `kind` (what lets ecgtune replace it later)."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; allowed: {list(OUTPUT_KINDS)}")
    payload = {"kind": kind, "written_by": "ecgtune", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (Path(directory) / MARKER_FILE).write_text(json.dumps(payload) + "\n")


def _overlap(out: Path, source: Path) -> str | None:
    if out == source:
        return "is the input"
    if out.is_relative_to(source):
        return "lies inside the input"
    if source.is_relative_to(out):
        return "contains the input"
    return None


def check_apart_from_inputs(out: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output path that is an input, lies inside one, or contains one (after symlinks)."""
    out_r = Path(out).expanduser().resolve()
    for source in inputs:
        why = _overlap(out_r, Path(source).expanduser().resolve())
        if why:
            raise OutputPathError(
                f"{out}: refusing to write here: it {why} {source}; choose an output path outside the input"
            )


def claim_output_dir(
    path: str | os.PathLike,
    kind: str,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    create: bool = True,
) -> Path:
    """Check that ecgtune may write the directory `path` as output of `kind`; return it.

    Allowed: an absent path, an empty directory, or a directory marked as ecgtune's `kind` output.
    Refused with OutputPathError (one line naming the path and why): a file, a non-empty
    directory ecgtune did not mark (or marked as another kind), or a path that is, lies inside or
    contains one of `inputs`. With `create`, the directory is made and marked.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; allowed: {list(OUTPUT_KINDS)}")
    p = Path(path).expanduser()
    check_apart_from_inputs(p, inputs)
    if p.is_symlink() and not p.exists():
        raise OutputPathError(f"{p}: a dangling symbolic link; expected a directory path ecgtune can create")
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{p}: exists and is not a directory; refusing to replace a file")
    if p.is_dir():
        found = marker_kind(p)
        if found is None and any(p.iterdir()):
            raise OutputPathError(
                f"{p}: a non-empty directory ecgtune did not write (no {MARKER_FILE} marker); refusing to "
                f"write a {kind} into it — choose a new or empty directory"
            )
        if found is not None and found != kind:
            raise OutputPathError(f"{p}: holds an ecgtune {found}, not a {kind}; choose another directory")
    if create:
        p.mkdir(parents=True, exist_ok=True)
        if marker_kind(p) is None:
            write_marker(p, kind)
    return p


def check_new_file(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse to write a file at `path` if anything is there already (ecgtune never overwrites one)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_symlink():
        what = "a directory" if p.is_dir() else "a file"
        raise OutputPathError(
            f"{p}: {what} already exists; refusing to overwrite it — choose a new file name"
        )
    for source in inputs:
        if p.resolve() == Path(source).expanduser().resolve():
            raise OutputPathError(f"{p}: is the input {source}; choose a new file name")
    return p


def inside_root(root: str | os.PathLike, name: str | os.PathLike) -> Path | None:
    """`root / name` if it resolves (after `..` and symlinks) inside `root`, else None. Never opens it.

    An absolute `name` is refused outright: a data file names paths relative to its dataset.
    """
    text = os.fspath(name)
    if not text or "\x00" in text or os.path.isabs(text):
        return None
    root_r = Path(root).resolve()
    candidate = Path(root) / text
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return candidate if resolved.is_relative_to(root_r) and resolved != root_r else None

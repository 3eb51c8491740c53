"""The sweep specs that ship inside the package (`ecgtune/sweeps/*.yaml`), found by name.

An installed ecgtune (a wheel, `pip install .` or from git — not a checkout) has them, and the example
record the demo predicts (`ecgtune/examples/`): pyproject.toml lists both as package data, and
tests/test_shipped.py builds the wheel and checks it holds them. So `ecgtune sweep smoke` and
`ecgtune demo` work from any directory.
"""

from __future__ import annotations

import os
from pathlib import Path

SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"
# A real 12-lead ECG (PTB Diagnostic, ODC-By; attribution in examples/README.md) the demo predicts.
EXAMPLE_RECORD = Path(__file__).resolve().parent / "examples" / "ptb-s0010" / "s0010_re"


def shipped_sweeps() -> list[str]:
    """The names of the shipped sweep specs (file names without `.yaml`), sorted."""
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def sweep_spec_path(spec: str | os.PathLike[str]) -> Path:
    """The spec file `spec` names: an existing file as given, else a shipped sweep by name.

    A name without a path separator that is not a file here ("smoke", or "smoke.yaml") is a shipped
    sweep; an unknown one raises FileNotFoundError listing the shipped names. Anything else (a path with
    a separator) is returned as given, so reading it names the missing file.
    """
    path = Path(spec)
    text = os.fspath(spec)
    if path.is_file() or "/" in text or os.sep in text:
        return path
    name = text.removesuffix(".yaml")
    shipped = SWEEPS_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"{text}: no such file, and not a shipped sweep (shipped: {', '.join(shipped_sweeps())})"
    )

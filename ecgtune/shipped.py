"""The shipped sweep specs (`sweeps/*.yaml` at the top of the repository), found by name.

One copy, in the repository's `sweeps/`: pyproject.toml maps that folder into the package
(`ecgtune.sweeps`), so an installed ecgtune (a wheel, `pip install .` or from git) holds them as
`ecgtune/sweeps/*.yaml`, beside the example record the demo predicts (`ecgtune/examples/`). A checkout,
an editable install (which runs the checkout's code) and a Ray job's copy of the working tree have no
`ecgtune/sweeps/` and read the repository's `sweeps/`. tests/test_shipped.py builds the wheel, installs
it outside the checkout and runs a shipped sweep by name from there. So `ecgtune sweep smoke`,
`ecgtune validate smoke` and `ecgtune demo` work from any directory.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _sweeps_dir() -> Path:
    # The package's own copy first: an installed one is always complete, while the folder beside an
    # installed package (site-packages/sweeps) may belong to anything.
    installed = _PACKAGE / "sweeps"
    return installed if installed.is_dir() else _PACKAGE.parent / "sweeps"


SWEEPS_DIR = _sweeps_dir()
# A real 12-lead ECG (PTB Diagnostic, ODC-By; attribution in examples/README.md) the demo predicts.
EXAMPLE_RECORD = _PACKAGE / "examples" / "ptb-s0010" / "s0010_re"


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

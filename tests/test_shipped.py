"""An installed ecgtune is self-contained: the wheel holds the whole package (the shipped sweep specs and
the example record the demo predicts), and `ecgtune sweep NAME` finds a shipped sweep without a checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ecgtune import cli, shipped
from ecgtune.shipped import SWEEPS_DIR, shipped_sweeps, sweep_spec_path
from ecgtune.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ecgtune"


def test_the_sweeps_the_readme_names_are_shipped() -> None:
    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"ecgtune sweep ([a-z_]+)(?![\w./])", readme))  # names, not files
    assert "smoke" in named, "the README no longer shows `ecgtune sweep smoke`"
    assert named <= set(shipped_sweeps()), named - set(shipped_sweeps())
    for name in shipped_sweeps():
        assert load_spec(sweep_spec_path(name)).name == name


def test_a_name_is_a_shipped_sweep_and_a_file_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sweep_spec_path("smoke") == SWEEPS_DIR / "smoke.yaml"
    assert sweep_spec_path("smoke.yaml") == SWEEPS_DIR / "smoke.yaml"
    (tmp_path / "smoke.yaml").write_text("name: mine\n")
    assert sweep_spec_path("smoke.yaml") == Path("smoke.yaml")  # a file here wins over the shipped one
    assert sweep_spec_path("runs/x.yaml") == Path("runs/x.yaml")  # a path: its reader names what is missing
    with pytest.raises(
        FileNotFoundError, match=r"smok: no such file, and not a shipped sweep \(shipped: .*smoke"
    ):
        sweep_spec_path("smok")


def test_an_unknown_sweep_name_is_one_line_listing_the_shipped_ones(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", "smok"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ecgtune sweep: error: smok: no such file"), err
    assert all(name in err[0] for name in shipped_sweeps())


@pytest.mark.slow
def test_the_wheel_holds_the_whole_package(tmp_path) -> None:
    """Build the wheel from a copy of what it is built from (pip would write build/ into the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "ecgtune", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    built = subprocess.run([*pip, "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("ecgtune-*.whl")
    in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("ecgtune/")}
    in_tree = {
        p.relative_to(src).as_posix()
        for p in (src / "ecgtune").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert in_tree - in_wheel == set(), "package files missing from the wheel (pyproject's package-data)"
    # What the demo needs on an installed copy, named so a renamed file cannot pass unnoticed.
    example = shipped.EXAMPLE_RECORD.relative_to(REPO).as_posix()
    assert {f"{example}.hea", f"{example}.dat", "ecgtune/sweeps/smoke.yaml"} <= in_wheel
    assert {f"ecgtune/sweeps/{n}.yaml" for n in shipped_sweeps()} <= in_wheel

"""An installed ecgtune is self-contained: the wheel holds the whole package (the shipped sweep specs, kept
once in the repository's sweeps/, and the example record the demo predicts), and `ecgtune sweep NAME` /
`ecgtune validate NAME` find a shipped sweep in a checkout and in an installed copy alike."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import yaml
from synthetic import write_trial_stores

from ecgtune import cli, shipped
from ecgtune.shipped import SWEEPS_DIR, shipped_sweeps, sweep_spec_path
from ecgtune.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ecgtune"
# What the wheel is built from: pyproject.toml names these (readme, license, the package, the sweeps).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "ecgtune", "sweeps")


def test_the_sweeps_the_readme_names_are_shipped() -> None:
    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"ecgtune sweep ([a-z_]+)(?![\w./])", readme))  # names, not files
    assert "smoke" in named, "the README no longer shows `ecgtune sweep smoke`"
    assert named <= set(shipped_sweeps()), named - set(shipped_sweeps())
    for name in shipped_sweeps():
        assert load_spec(sweep_spec_path(name)).name == name


def test_the_shipped_sweeps_are_one_copy_in_the_top_level_sweeps_folder() -> None:
    assert SWEEPS_DIR == REPO / "sweeps"  # a checkout (and an editable install) reads them there
    assert {"smoke", "resnet_widths", "vit_patch_depth", "paper"} <= set(shipped_sweeps())
    assert not (PACKAGE / "sweeps").exists(), "a second copy inside the package would shadow sweeps/"


def test_pyproject_lists_every_package_and_maps_the_sweeps_into_it() -> None:
    """The packages are listed, not discovered (discovery cannot see sweeps/): a new subpackage that is
    not listed would be missing from every installed copy."""
    from setuptools.config.pyprojecttoml import read_configuration

    tool = read_configuration(REPO / "pyproject.toml")["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert set(tool["packages"]) == on_disk | {"ecgtune.sweeps"}
    assert tool["package-dir"] == {"ecgtune.sweeps": "sweeps"}
    assert tool["package-data"]["ecgtune.sweeps"] == ["*.yaml"]


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


@pytest.mark.parametrize("verb", ["sweep", "validate"])
def test_an_unknown_sweep_name_is_one_line_listing_the_shipped_ones(verb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main([verb, "smok"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ecgtune {verb}: error: smok: no such file"), err
    assert all(name in err[0] for name in shipped_sweeps())


def test_validate_takes_a_shipped_sweep_by_name(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # nowhere near the repository's sweeps/
    assert cli.main(["validate", "smoke"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{SWEEPS_DIR / 'smoke.yaml'}: valid sweep spec 'smoke'"]


# ------------------------------------------------------------------------------- the installed wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, Path]:
    """(the tree it was built from, the wheel): built from a copy of what pyproject.toml reads, because
    pip would write build/ and *.egg-info into the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    built = subprocess.run([*pip, "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("ecgtune-*.whl")
    return src, whl


@pytest.mark.slow
def test_the_wheel_holds_the_whole_package(wheel) -> None:
    src, whl = wheel
    in_wheel = {n for n in zipfile.ZipFile(whl).namelist() if n.startswith("ecgtune/")}
    in_tree = {
        p.relative_to(src).as_posix()
        for p in (src / "ecgtune").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert in_tree - in_wheel == set(), "package files missing from the wheel (pyproject's package-data)"
    # The one copy of the sweeps, mapped into the package, and nothing else from sweeps/.
    sweeps = {f"ecgtune/sweeps/{p.name}" for p in (src / "sweeps").iterdir()}
    assert {n for n in in_wheel if n.startswith("ecgtune/sweeps/")} == sweeps
    # What the demo needs on an installed copy, named so a renamed file cannot pass unnoticed.
    example = shipped.EXAMPLE_RECORD.relative_to(REPO).as_posix()
    assert {f"{example}.hea", f"{example}.dat", "ecgtune/sweeps/smoke.yaml"} <= in_wheel
    assert {f"ecgtune/sweeps/{n}.yaml" for n in shipped_sweeps()} <= in_wheel


def _install(whl: Path, venv: Path) -> Path:
    """A fresh venv holding the wheel (no dependencies: it sees this interpreter's site-packages through a
    .pth line, so torch and Ray are not installed again); its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    # A path line only: the .pth files in these directories (this checkout's editable install among
    # them) are not run, so the venv's ecgtune is the wheel's.
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    # --ignore-installed: the checkout's editable ecgtune is visible through the .pth; leave it alone.
    installed = subprocess.run([*pip, "--ignore-installed", str(whl)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    return purelib


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment (conftest's Ray token) without anything that points at the checkout or
    at another Ray, and with Ray's loopback-only setting, which Ray reads when it is imported."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS", "ECGTUNE_DATA")
    }
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return {**env, **extra}


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run `cmd` in a session of its own, so a sweep that hangs is killed with every Ray process it
    started; (exit status, stdout and stderr)."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0]
    return proc.returncode, output


@pytest.mark.slow
@pytest.mark.cluster
def test_an_installed_wheel_validates_and_runs_a_shipped_sweep_by_name(wheel, tmp_path) -> None:
    """From the wheel, installed in a fresh venv, outside the checkout: `ecgtune validate smoke`, then the
    smoke sweep itself, made tiny with --set (one trial of one epoch per stage on tiny stores)."""
    _, whl = wheel
    venv = tmp_path / "venv"
    purelib = _install(whl, venv)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _environment()

    show = "import ecgtune.shipped as s; print(s.__file__); print(s.SWEEPS_DIR)"
    python = venv / "bin" / "python"
    where = subprocess.run(
        [python, "-c", show], cwd=elsewhere, env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    assert where == [str(purelib / "ecgtune" / "shipped.py"), str(purelib / "ecgtune" / "sweeps")]

    ecgtune = str(venv / "bin" / "ecgtune")
    code, output = _run([ecgtune, "validate", "smoke"], elsewhere, env, timeout=120)
    assert code == 0, output[-3000:]
    assert output.strip() == f"{purelib / 'ecgtune' / 'sweeps' / 'smoke.yaml'}: valid sweep spec 'smoke'"

    stores = write_trial_stores(tmp_path / "data")
    storage = tmp_path / "runs"
    tiny = {
        "search.num_samples": "1",
        "search.max_concurrent_trials": "1",
        "search.asha.grace_period": "1",
        "stages.pretrain.epochs": "1",
        "stages.finetune.epochs": "1",
        "data.pretrain": "{path: deepfake}",  # below ECGTUNE_DATA
        "data.finetune": "{path: ptbxl}",
        "run.storage_path": str(storage),
    }
    overrides = [arg for key, value in tiny.items() for arg in ("--set", f"{key}={value}")]
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
    try:
        run_env = _environment(ECGTUNE_DATA=str(stores), RAY_TMPDIR=ray_tmp)
        code, output = _run([ecgtune, "sweep", "smoke", *overrides], elsewhere, run_env, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert code == 0, output[-4000:]
    (experiment,) = storage.glob("smoke-*")
    assert f"results: {experiment}" in output
    ran = yaml.safe_load((experiment / "spec.yaml").read_text())  # the spec as run: overrides included
    assert ran["name"] == "smoke" and ran["search"]["num_samples"] == 1
    assert ran["stages"]["finetune"]["epochs"] == 1
    assert ran["data"]["finetune"] == {"path": str(stores / "ptbxl"), "demo": None}  # resolved below the root
    trials = json.loads((experiment / "summary.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["finished"], trials

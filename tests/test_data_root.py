"""Where sweeps find their data: ./data locally; inside a Ray job only an absolute $ECGTUNE_DATA, and a
missing store fails at once, naming its path. Resolving a store builds nothing: `ecgtune sweep` and
`ecgtune train` build the demo stores as a step of their own (said on the console), never in a Ray job.

Fast: the job is simulated by the variable Ray's job supervisor sets for a job's entrypoint. A real
`ray job submit` of the same cases: test_job_data.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml
from synthetic import write_synthetic_store

from ecgtune import cli
from ecgtune.data import locate
from ecgtune.data.demo import ensure_demo_data
from ecgtune.data.locate import DataRootError, StoreNotFoundError, data_root, require_store, resolve_store
from ecgtune.shipped import SWEEPS_DIR
from ecgtune.spec import StoreSpec, load_spec

SWEEPS = SWEEPS_DIR


@pytest.fixture
def as_ray_job(monkeypatch):
    monkeypatch.setenv(locate.RAY_JOB_ENV, '{"runtime_env": {}, "metadata": {}}')


@pytest.fixture
def no_demo_build(monkeypatch):
    import ecgtune.data.demo

    def refuse(*args, **kwargs):
        raise AssertionError("the demo stores were built")

    monkeypatch.setattr(ecgtune.data.demo, "build_demo", refuse)


def test_ray_job_detection_matches_what_ray_sets_for_a_jobs_entrypoint():
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    assert locate.RAY_JOB_ENV == RAY_JOB_CONFIG_JSON_ENV_VAR
    source = Path(sys.modules["ray"].__file__).parent / "dashboard" / "modules" / "job" / "job_supervisor.py"
    assert "RAY_JOB_CONFIG_JSON_ENV_VAR:" in source.read_text()  # _get_driver_env_vars sets it


def test_local_data_root_is_dot_data_of_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(locate.DATA_ENV, raising=False)
    monkeypatch.delenv(locate.RAY_JOB_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert data_root() == tmp_path / "data"
    assert resolve_store(StoreSpec(path="ptbxl")) == tmp_path / "data" / "ptbxl"


@pytest.mark.parametrize("value", [None, "data", "./stores"])
def test_a_ray_job_refuses_a_data_root_inside_its_temporary_copy(as_ray_job, monkeypatch, tmp_path, value):
    monkeypatch.chdir(tmp_path)
    if value is None:
        monkeypatch.delenv(locate.DATA_ENV, raising=False)
    else:
        monkeypatch.setenv(locate.DATA_ENV, value)
    for store in (StoreSpec(path="ptbxl"), StoreSpec(demo="ptbxl")):
        with pytest.raises(DataRootError, match="ECGTUNE_DATA") as e:
            resolve_store(store)
        assert str(tmp_path) in str(e.value) and "runtime_env" in str(e.value)


def test_a_ray_job_uses_stores_already_built_below_an_absolute_root(
    as_ray_job, no_demo_build, monkeypatch, tmp_path
):
    monkeypatch.setenv(locate.DATA_ENV, str(tmp_path))
    write_synthetic_store(tmp_path / "demo" / "ptbxl", 10, seed=0)
    write_synthetic_store(tmp_path / "ptbxl", 10, seed=0)
    assert require_store(StoreSpec(demo="ptbxl")) == tmp_path / "demo" / "ptbxl"
    assert require_store(StoreSpec(path="ptbxl")) == tmp_path / "ptbxl"


def test_a_ray_job_never_builds_a_missing_demo_store(as_ray_job, no_demo_build, monkeypatch, tmp_path):
    monkeypatch.setenv(locate.DATA_ENV, str(tmp_path))
    ensure_demo_data([StoreSpec(demo="deepfake")])  # the step `ecgtune sweep` takes: nothing in a job
    with pytest.raises(StoreNotFoundError) as e:
        require_store(StoreSpec(demo="deepfake"))
    message = str(e.value)
    assert str(tmp_path / "demo" / "deepfake") in message
    assert f"ecgtune data demo --root {tmp_path / 'demo'}" in message
    assert not (tmp_path / "demo").exists()  # nothing written, not even a lock file


def test_a_missing_store_names_its_path_and_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.delenv(locate.RAY_JOB_ENV, raising=False)
    monkeypatch.setenv(locate.DATA_ENV, str(tmp_path))
    (tmp_path / "half").mkdir()  # a conversion that died: no provenance.json
    for name, state in (("ptbxl", "does not exist"), ("half", "is not a finished store")):
        with pytest.raises(StoreNotFoundError, match=state) as e:
            require_store(StoreSpec(path=name))
        assert str(tmp_path / name) in str(e.value) and f"ECGTUNE_DATA={tmp_path}" in str(e.value)
        assert f"-o {tmp_path / name}" in str(e.value)


def test_reading_and_resolving_a_spec_that_names_demo_stores_builds_nothing(
    no_demo_build, monkeypatch, tmp_path
):
    monkeypatch.delenv(locate.RAY_JOB_ENV, raising=False)
    monkeypatch.setenv(locate.DATA_ENV, str(tmp_path))
    spec = load_spec(SWEEPS / "smoke.yaml")
    assert spec.data.finetune.demo == "ptbxl"
    assert resolve_store(spec.data.finetune) == tmp_path / "demo" / "ptbxl"
    with pytest.raises(StoreNotFoundError, match=f"ecgtune data demo --root {tmp_path / 'demo'}"):
        require_store(spec.data.finetune)
    assert not (tmp_path / "demo").exists()  # nothing written, not even a lock file


def _fake_build_demo(built):
    def build(root, rebuild=False):
        built.append(root)
        for n in ("deepfake", "ptbxl"):
            if not (root / n).exists():
                write_synthetic_store(root / n, 10, seed=0)
        return []

    return build


def test_locally_missing_demo_stores_are_built_as_a_step_with_a_progress_line(monkeypatch, tmp_path, capsys):
    import ecgtune.data.demo

    monkeypatch.delenv(locate.RAY_JOB_ENV, raising=False)
    monkeypatch.setenv(locate.DATA_ENV, str(tmp_path))
    built: list[Path] = []
    monkeypatch.setattr(ecgtune.data.demo, "build_demo", _fake_build_demo(built))
    ensure_demo_data([None, StoreSpec(path="ptbxl")])  # names no demo store: nothing to build
    assert built == [] and capsys.readouterr().err == ""
    ensure_demo_data([None, StoreSpec(demo="ptbxl")])
    line = capsys.readouterr().err
    assert f"building the demo stores in {tmp_path / 'demo'}" in line and "ecgtune data demo --root" in line
    assert built == [tmp_path / "demo"]
    assert require_store(StoreSpec(demo="deepfake")) == tmp_path / "demo" / "deepfake"
    ensure_demo_data([StoreSpec(demo="deepfake")])  # built: checked again, no second progress line
    assert "building" not in capsys.readouterr().err


def test_the_sweep_command_builds_the_demo_stores_before_the_sweep(monkeypatch, tmp_path, capsys):
    import ecgtune.data.demo
    import ecgtune.search

    monkeypatch.delenv(locate.RAY_JOB_ENV, raising=False)
    monkeypatch.setenv(locate.DATA_ENV, str(tmp_path))
    built: list[Path] = []
    monkeypatch.setattr(ecgtune.data.demo, "build_demo", _fake_build_demo(built))
    swept = []

    def run_sweep(path, **kwargs):
        swept.append(ecgtune.search.resolve_data(load_spec(path)))
        raise ValueError("stop here")

    monkeypatch.setattr(ecgtune.search, "run_sweep", run_sweep)
    assert cli.main(["sweep", str(SWEEPS / "smoke.yaml")]) == 2
    assert built == [tmp_path / "demo"] and "building the demo stores" in capsys.readouterr().err
    assert swept[0].data.finetune.path == str(tmp_path / "demo" / "ptbxl")


def test_sweep_with_a_missing_store_fails_before_ray_starts(monkeypatch, tmp_path, capsys):
    import ecgtune.search

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a sweep whose data is missing")

    monkeypatch.setattr(ecgtune.search, "_init_ray", no_ray)
    monkeypatch.delenv(locate.RAY_JOB_ENV, raising=False)
    monkeypatch.setenv(locate.DATA_ENV, str(tmp_path))
    sweep = yaml.safe_load((SWEEPS / "resnet_widths.yaml").read_text())
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(sweep))
    started = time.time()
    assert cli.main(["sweep", str(spec_file), "--storage-path", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ecgtune sweep: error: data store "), err
    assert str(tmp_path) in err[0]
    assert time.time() - started < 10

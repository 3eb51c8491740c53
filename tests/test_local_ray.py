"""A local Ray really stays on loopback and ignores a dead cluster; a GPU is never wasted silently
(issue 13, classes 5 and 6). The loopback test runs the real CLI in a subprocess *without* the
test suite's environment (conftest sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER for every other test,
which would hide a CLI that does not)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import torch
from synthetic import write_trial_stores
from test_sweep import write_spec

from ecgtune import cli
from ecgtune.spec import load_spec
from ecgtune.trial import GPUUnavailableError, trial_device


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
    return (mapped or addr).is_loopback


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_trial_stores(tmp_path_factory.mktemp("stores"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listeners(pids: set[int]) -> set[tuple[str, str, int]]:
    out = set()
    for c in psutil.net_connections("inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            try:
                name = psutil.Process(c.pid).name()
            except psutil.Error:
                name = "?"
            out.add((name, c.laddr.ip, c.laddr.port))
    return out


@pytest.mark.slow
@pytest.mark.cluster
def test_cli_sweep_listens_only_on_loopback_and_ignores_a_dead_cluster(stores, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", stores, tmp_path / "runs", num_samples=2)
    ray_tmp = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # short: Ray's unix socket paths have a limit
    try:
        # A cluster that died uncleanly leaves its address where `ray.init()` looks for one.
        Path(ray_tmp, "ray").mkdir()
        Path(ray_tmp, "ray", "ray_current_cluster").write_text(f"127.0.0.1:{_closed_port()}")
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")
        }
        env["RAY_TMPDIR"] = ray_tmp
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecgtune", "sweep", str(spec)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        seen: set[tuple[str, str, int]] = set()
        deadline = time.monotonic() + 240
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    pids = {proc.pid} | {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
                except psutil.NoSuchProcess:
                    break
                seen |= _listeners(pids)
                time.sleep(0.3)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
        output = proc.communicate()[0]
        assert proc.returncode == 0, output[-3000:]
        names = {n for n, _, _ in seen}
        assert {"gcs_server", "raylet"} <= names, seen  # the check saw Ray's own daemons listening
        assert not [s for s in seen if not is_loopback(s[1])], seen
    finally:
        subprocess.run(["rm", "-rf", ray_tmp], check=False)


def test_an_explicit_address_with_no_cluster_fails_in_seconds_naming_it(capsys):
    from ecgtune.search import _check_cluster_answers

    port = _closed_port()
    with pytest.raises(ConnectionError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        _check_cluster_answers(f"127.0.0.1:{port}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no CUDA device")
def test_trial_device_refuses_a_granted_gpu_torch_cannot_use(stores, tmp_path):
    spec = load_spec(write_spec(tmp_path / "spec.yaml", stores, tmp_path / "runs"))
    assert trial_device(spec, []) == "cpu"
    with pytest.raises(GPUUnavailableError, match=f"torch {re.escape(torch.__version__)}.*cpu_fallback"):
        trial_device(spec, [0])
    fallback = spec.model_copy(update={"resources": spec.resources.model_copy(update={"cpu_fallback": True})})
    assert trial_device(fallback, [0]) == "cpu"


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no CUDA device")
def test_gpu_sweep_on_fake_gpus_fails_at_once_or_falls_back_when_asked(stores, tmp_path, capsys):
    """`ray.init(num_gpus=1)` on a CPU machine: Ray grants fractional GPUs that a CPU torch cannot use."""
    import ray
    import yaml


    spec_file = write_spec(tmp_path / "spec.yaml", stores, tmp_path / "runs", num_samples=2, concurrent=2)
    raw = yaml.safe_load(spec_file.read_text())
    raw["resources"] = {"cpu": 1, "gpu": 0.5}
    raw["search"]["asha"] = None
    spec_file.write_text(yaml.safe_dump(raw))
    raw["resources"]["cpu_fallback"] = True
    raw["name"] = "fallback"
    fallback_file = tmp_path / "fallback.yaml"
    fallback_file.write_text(yaml.safe_dump(raw))
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        # As `ray job submit` runs it: the command's exit status is the job's state.
        assert cli.main(["sweep", str(spec_file)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            "ecgtune sweep: sweep sweeptest failed: all 2 trials errored"
        ), err
        assert "finds no CUDA device" in err[0]
        (refused_file,) = (tmp_path / "runs").glob("sweeptest-*/summary.json")
        refused = json.loads(refused_file.read_text())
        assert cli.main(["sweep", str(fallback_file)]) == 0
        (allowed_file,) = (tmp_path / "runs").glob("fallback-*/summary.json")
        allowed = json.loads(allowed_file.read_text())
    finally:
        ray.shutdown()
    assert [t["status"] for t in refused["trials"]] == ["error", "error"]
    assert all(
        "finds no CUDA device" in t["error"] and "cpu_fallback" in t["error"] for t in refused["trials"]
    )
    assert all(t["epochs"] == 0 for t in refused["trials"])  # failed before training anything
    assert [t["status"] for t in allowed["trials"]] == ["finished", "finished"]
    assert [t["device"] for t in allowed["trials"]] == ["cpu", "cpu"]


@pytest.mark.parametrize("connected", [True, False])
@pytest.mark.parametrize("fails", [True, False])
def test_run_sweep_stops_the_ray_it_started_and_only_that(monkeypatch, stores, tmp_path, connected, fails):
    """A local Ray left up after its sweep keeps daemons and idle workers on the cores the demo's final
    training uses next; a Ray the caller started (a test fixture, `ray job submit`'s driver) stays."""
    import ray

    import ecgtune.search

    spec = write_spec(tmp_path / "spec.yaml", stores, tmp_path / "runs", num_samples=2)
    shutdowns = []

    def fit(*args):
        if fails:
            raise RuntimeError("the sweep failed")
        return "result"

    monkeypatch.setattr(ecgtune.search, "_init_ray", lambda address: connected)
    monkeypatch.setattr(ecgtune.search, "_fit", fit)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(1))
    if fails:
        with pytest.raises(RuntimeError, match="the sweep failed"):
            ecgtune.search.run_sweep(spec)
    else:
        assert ecgtune.search.run_sweep(spec) == "result"
    assert shutdowns == ([1] if connected else [])

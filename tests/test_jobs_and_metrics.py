"""`ray job submit` of a sweep against `ray start --head`, and ecgtune's metrics on the Prometheus endpoint.

Everything stays on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set in conftest). The head started
here is stopped by killing the processes of its own temp dir — never `ray stop`, which would kill
every Ray process on the host.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from test_sweep import stores, write_spec  # noqa: F401  (fixture reused)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_processes_under(marker: str) -> None:
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    family = {p.pid: p for p in procs}
    for p in procs:
        try:
            for child in p.children(recursive=True):
                family[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    for p in family.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(family.values()), timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def head_node():
    temp = tempfile.mkdtemp(
        prefix="ecgtune-head-", dir="/tmp"
    )  # short: Ray's socket paths have a length limit
    dashboard_port = free_port()
    cmd = [
        RAY, "start", "--head", f"--port={free_port()}", f"--dashboard-port={dashboard_port}",
        "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        f"--temp-dir={temp}", "--disable-usage-stats", "--include-dashboard=true",
        # Ports of its own for the head's agents: Ray's defaults (52365, ...) are taken whenever another
        # Ray runs on the machine, and a head whose job agent cannot bind never accepts a job.
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
    ]  # fmt: skip
    started = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{dashboard_port}"
    finally:
        kill_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


def submit_job(
    cmd: list[str], timeout: float, wait_for_agent_s: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """`ray job submit`, retried while the fresh head's job agent has not registered yet (Ray answers
    "No available agent to submit job, please try again later"; seen on a loaded 2-core machine)."""
    deadline = time.time() + wait_for_agent_s
    while True:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if "No available agent to submit job" not in out.stdout + out.stderr or time.time() > deadline:
            return out
        time.sleep(3)


def test_ray_job_submit_runs_the_sweep_to_success(head_node, stores, tmp_path):  # noqa: F811
    spec_file = write_spec(tmp_path / "spec.yaml", stores, tmp_path / "unused", num_samples=3, concurrent=2)
    storage = tmp_path / "runs"
    submit = [
        RAY, "job", "submit", "--address", head_node, "--working-dir", str(REPO),
        "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"),
        "--", sys.executable, "-m", "ecgtune", "sweep", str(spec_file), "--storage-path", str(storage),
    ]  # fmt: skip
    out = submit_job(submit, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "succeeded" in (out.stdout + out.stderr).lower()
    summaries = list(storage.glob("sweeptest-*/summary.json"))
    assert len(summaries) == 1
    listing = subprocess.run([RAY, "job", "list", "--address", head_node], capture_output=True, text=True)
    assert listing.returncode == 0 and "SUCCEEDED" in listing.stdout


def test_trial_metrics_reach_the_prometheus_export_endpoint():
    import ray

    from ecgtune.trial import _DashboardGauges

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote
        class FakeTrial:
            def publish(self) -> None:
                self.gauges = _DashboardGauges("metricsweep", "trial_00001")
                metrics = {"objective": 1.25, "epoch": 3, "stage": "finetune", "ptbxl_val_mae_qt": 17.5}
                self.gauges.update(metrics)

        actor = FakeTrial.remote()
        ray.get(actor.publish.remote())
        port = ray.nodes()[0]["MetricsExportPort"]
        deadline, text = time.time() + 60, ""
        while time.time() < deadline:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                text = ""
            if "ray_ecgtune_trial_val_mae" in text and "ray_ecgtune_trial_objective" in text:
                break
            time.sleep(2)
        lines = [
            ln for ln in text.splitlines() if ln.startswith("ray_ecgtune_") and 'sweep="metricsweep"' in ln
        ]
        objective = [ln for ln in lines if ln.startswith("ray_ecgtune_trial_objective")]
        mae = [ln for ln in lines if ln.startswith("ray_ecgtune_trial_val_mae") and 'target="qt"' in ln]
        assert objective and float(objective[0].split()[-1]) == 1.25, lines
        assert mae and float(mae[0].split()[-1]) == 17.5, lines
    finally:
        ray.shutdown()
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"

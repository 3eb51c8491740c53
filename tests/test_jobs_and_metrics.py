"""`ray job submit` of a sweep against `ray start --head`, and ecgtune's metrics on the Prometheus endpoint.

Everything stays on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set in conftest). The head started
here is stopped by killing the processes of its own temp dir — never `ray stop`, which would kill
every Ray process on the host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_sweep import stores, write_spec  # noqa: F401  (fixture reused)

from bench.ray_head import RAY, Head, start_head, stop_head

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def head_node():
    head = start_head()
    try:
        yield head
    finally:
        stop_head(head)


def submit_job(
    head: Head, cmd: list[str], timeout: float, wait_for_agent_s: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """`ray job submit` to `head`, retried while the fresh head's job agent has not registered yet (Ray
    answers "No available agent to submit job, please try again later"; seen on a loaded 2-core machine)."""
    deadline = time.time() + wait_for_agent_s
    while True:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=head.env)
        if "No available agent to submit job" not in out.stdout + out.stderr or time.time() > deadline:
            return out
        time.sleep(3)


def test_ray_job_submit_runs_the_sweep_to_success(head_node, stores, tmp_path):  # noqa: F811
    spec_file = write_spec(tmp_path / "spec.yaml", stores, tmp_path / "unused", num_samples=3, concurrent=2)
    storage = tmp_path / "runs"
    submit = [
        RAY, "job", "submit", "--address", head_node.dashboard, "--working-dir", str(REPO),
        "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"),
        "--", sys.executable, "-m", "ecgtune", "sweep", str(spec_file), "--storage-path", str(storage),
    ]  # fmt: skip
    out = submit_job(head_node, submit, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "succeeded" in (out.stdout + out.stderr).lower()
    summaries = list(storage.glob("sweeptest-*/summary.json"))
    assert len(summaries) == 1
    listing = head_node.ray("job", "list", "--address", head_node.dashboard, check=False)
    assert listing.returncode == 0 and "SUCCEEDED" in listing.stdout


def test_a_trials_metrics_reach_the_prometheus_export_endpoint_though_it_ended_at_once():
    """The driver publishes a trial's series (`SweepGauges`): a trial Tune ends right after its only
    result, as ASHA stops one at its first rung, still reaches the export (a worker that published its
    own series exited before Ray's first report interval and was never seen)."""
    from types import SimpleNamespace

    import ray

    from ecgtune.sweep_callbacks import SweepGauges

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        sweep = SweepGauges("metricsweep")
        trial = SimpleNamespace(trial_id="trial_00001", last_result={})
        sweep.on_trial_start(0, [], trial)
        result = {"objective": 1.25, "epoch": 3, "stage": "finetune", "ptbxl_val_mae_qt": 17.5}
        sweep.on_trial_result(0, [], trial, result)
        trial.last_result = result
        sweep.on_trial_complete(0, [], trial)
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

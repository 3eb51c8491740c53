"""A sweep submitted with `ray job submit --working-dir` finds its data on the cluster, or fails at once.

The job runs in a temporary copy of the submitted directory, so `./data` there is empty: ecgtune must
not build the stores there (it once did, for minutes, with empty job logs). A real head on 127.0.0.1,
as in test_jobs_and_metrics.py; the fast cases of the same rules are in test_data_root.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from synthetic import write_trial_stores
from test_jobs_and_metrics import REPO, head_node, submit_job  # noqa: F401  (fixture reused)

from bench.ray_head import RAY, Head

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture
def no_data_env(monkeypatch):
    """The head (and so every job on it) must not inherit an ECGTUNE_DATA from whoever runs the tests."""
    monkeypatch.delenv("ECGTUNE_DATA", raising=False)


def _submit(head: Head, entrypoint: list[str], env_vars: dict[str, str] | None = None, timeout: int = 300):
    cmd = [RAY, "job", "submit", "--address", head.dashboard, "--working-dir", str(REPO)]
    if env_vars:
        cmd += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
    started = time.time()
    out = submit_job(head, [*cmd, "--", *entrypoint], timeout=timeout)
    return out.returncode, out.stdout + out.stderr, time.time() - started


def _demo_spec(path: Path, storage: Path) -> Path:
    spec = {
        "name": "jobdata",
        "model": {"name": "resnet_tiny", "params": {"stem_widths": [8, 8], "block_widths": [8, 8]}},
        "targets": ["hr", "pr", "qrs", "qt"],
        "data": {"pretrain": {"demo": "deepfake"}, "finetune": {"demo": "ptbxl"}},
        "stages": {"pretrain": {"epochs": 1, "batch_size": 8}, "finetune": {"epochs": 1, "batch_size": 8}},
        "search": {
            "space": {"finetune.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            "num_samples": 1,
            "max_concurrent_trials": 1,
            "asha": None,
        },
        "resources": {"cpu": 1, "gpu": 0},
        "run": {"storage_path": str(storage), "max_failures": 0},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_job_uses_the_clusters_stores_or_fails_at_once_naming_them(no_data_env, head_node, tmp_path):  # noqa: F811
    sweep = [sys.executable, "-m", "ecgtune", "sweep"]
    # 1. No ECGTUNE_DATA: ./data would be inside the job's temporary copy. Refused, saying how to set it.
    code, log, seconds = _submit(head_node, [*sweep, "smoke", "--storage-path", str(tmp_path / "r")])
    assert code != 0 and "ecgtune sweep: error: running as a Ray job" in log, log[-3000:]
    assert "ECGTUNE_DATA is not set" in log and "runtime_env" in log
    assert "building the demo stores" not in log
    assert seconds < 60, seconds

    # 2. An absolute root without the demo stores: fails at once with the paths and the build command.
    data = tmp_path / "data"
    data.mkdir()
    code, log, seconds = _submit(
        head_node,
        [*sweep, "smoke", "--storage-path", str(tmp_path / "r")],
        {"ECGTUNE_DATA": str(data)},
    )
    assert code != 0, log[-3000:]
    assert f"data store {data / 'demo' / 'ptbxl'} (ECGTUNE_DATA={data}) does not exist" in log, log[-3000:]
    assert f"ecgtune data demo --root {data / 'demo'}" in log
    assert list(data.iterdir()) == [] and seconds < 60, seconds  # nothing written, no lock file either

    # 3. The stores built there (tiny stand-ins under the demo names): the job uses them as they are.
    write_trial_stores(data / "demo")
    keys = {
        n: json.loads((data / "demo" / n / "provenance.json").read_text())["key"]
        for n in ("deepfake", "ptbxl")
    }
    storage = tmp_path / "runs"
    spec = _demo_spec(tmp_path / "jobdata.yaml", storage)
    code, log, seconds = _submit(head_node, [*sweep, str(spec)], {"ECGTUNE_DATA": str(data)})
    assert code == 0 and "succeeded" in log.lower(), log[-3000:]
    (summary_file,) = storage.glob("jobdata-*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert [t["status"] for t in summary["trials"]] == ["finished"]
    written = yaml.safe_load((summary_file.parent / "spec.yaml").read_text())
    assert written["data"]["finetune"]["path"] == str(data / "demo" / "ptbxl")
    assert keys == {
        n: json.loads((data / "demo" / n / "provenance.json").read_text())["key"]
        for n in ("deepfake", "ptbxl")
    }, "the demo stores were rebuilt"
    assert "building the demo stores" not in log

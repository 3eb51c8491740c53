"""End-to-end sweeps on a local Ray (loopback, 2 CPUs): TPE + ASHA, pruned trials, driver resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sweep_checks import check_counts, check_optuna, reported
from synthetic import write_synthetic_store, write_trial_stores

from ecgtune.backbones import BackboneStore
from ecgtune.spec import StoreSpec, load_spec

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

MAX_EPOCHS = 4


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_trial_stores(tmp_path_factory.mktemp("stores"))


def write_spec(
    path: Path,
    stores: Path,
    storage: Path,
    num_samples: int = 8,
    concurrent: int = 1,
    one_backbone: bool = False,
) -> Path:
    """A tiny sweep spec; `one_backbone`: num_blocks fixed, so every trial needs the same backbone."""
    spec = {
        "name": "sweeptest",
        "model": {"name": "resnet_tiny", "params": {"stem_widths": [8, 8], "block_widths": [8, 8]}},
        "targets": ["hr", "pr", "qrs", "qt"],
        "data": {"pretrain": {"path": str(stores / "deepfake")}, "finetune": {"path": str(stores / "ptbxl")}},
        "stages": {
            "pretrain": {"epochs": 1, "batch_size": 8},
            "finetune": {"epochs": MAX_EPOCHS - 1, "batch_size": 8},
        },
        "search": {
            "space": {
                "model.num_blocks": {"type": "int", "low": 1, "high": 3},
                "finetune.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            },
            "num_samples": num_samples,
            "max_concurrent_trials": concurrent,
            "searcher": {"seed": 0, "n_startup_trials": 3},
            "asha": {"grace_period": 1, "reduction_factor": 2},
        },
        "resources": {"cpu": 1, "gpu": 0},
        "run": {"storage_path": str(storage), "max_failures": 0, "checkpoints_kept": 1},
    }
    if one_backbone:
        del spec["search"]["space"]["model.num_blocks"]
    path.write_text(yaml.safe_dump(spec))
    return path


def test_smoke_sweep_asha_stops_trials_and_tpe_sees_them_pruned(stores, tmp_path):
    import ray

    from ecgtune.search import run_sweep
    from ecgtune.spec import apply_params

    spec_file = write_spec(tmp_path / "spec.yaml", stores, tmp_path / "runs")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(spec_file)
    finally:
        ray.shutdown()
    s = result.summary
    trials = s["trials"]
    assert len(trials) == 8
    assert not [t for t in trials if t["status"] == "error"], [t["error"] for t in trials]
    stopped = [t for t in trials if t["status"] == "stopped"]
    finished = [t for t in trials if t["status"] == "finished"]
    assert stopped, "ASHA stopped no trial before max_t"
    assert all(t["epochs"] < MAX_EPOCHS for t in stopped)
    # ASHA counts fine-tuning epochs (search.asha.clock defaults to finetune): no trial is stopped
    # during its one pretraining epoch, where the objective is only a zero-shot read-out.
    assert all(t["epochs"] >= 2 for t in stopped), [t["epochs"] for t in stopped]
    assert all(t["epochs"] == MAX_EPOCHS for t in finished)
    # TPE was told the truth: every ASHA-stopped trial is PRUNED, not COMPLETE with a low-fidelity value.
    assert s["optuna_states"] == {"complete": len(finished), "pruned": len(stopped)}
    # The best result is a finished trial whose config, applied to the spec, is a complete training config.
    best = s["best"]
    assert best["status"] == "finished"
    assert set(best["config"]) >= {"model.num_blocks", "finetune.lr"}
    standalone = apply_params(load_spec(spec_file), best["config"])
    assert (
        standalone.search is None
        and standalone.model.params["num_blocks"] == best["config"]["model.num_blocks"]
    )
    assert all(v is not None for v in best["ptbxl_val_mae"].values())
    written = json.loads((Path(result.experiment_path) / "summary.json").read_text())
    assert written["best"]["trial_id"] == best["trial_id"]

    # From a finished sweep to a report, an exported config and a trained, test-evaluated model.
    from ecgtune.final import train_final
    from ecgtune.report import export_best, report_experiment

    written_files = report_experiment(result.experiment_path, tmp_path / "report")
    assert {"report.md", "trials.csv"} <= {Path(f).name for f in written_files}
    trials_csv = (tmp_path / "report" / "trials.csv").read_text().splitlines()
    assert len(trials_csv) == 1 + 8
    exported, origin = export_best(result.experiment_path, tmp_path / "best.yaml")
    assert origin["trial_id"] == best["trial_id"]
    config = load_spec(exported)
    assert config.search is None and config.origin["trial_id"] == best["trial_id"]
    assert config.model.params["num_blocks"] == best["config"]["model.num_blocks"]
    assert config.stages.finetune.lr == pytest.approx(best["config"]["finetune.lr"])
    # The sweep never read the test fold (its file is gone); final training is the one that needs it.
    with pytest.raises(ValueError, match="test.i16"):
        train_final(config, tmp_path / "final")
    # The exported config trains as it is, given fine-tuning data that still has its test fold.
    full = write_synthetic_store(tmp_path / "ptbxl-full", 30, seed=1, gain=1.5, source="ptbxl")
    data = config.data.model_copy(update={"finetune": StoreSpec(path=str(full.path))})
    final = train_final(config.model_copy(update={"data": data}), tmp_path / "final")
    assert final.test["statement"].startswith("First and only") and final.test["n_ecgs"] == 6


def _trials_with_results(experiment: Path) -> dict[str, int]:
    """trial dir -> number of epochs reported so far (lines of result.json)."""
    out = {}
    for f in experiment.glob("*/result.json"):
        out[f.parent.name] = sum(1 for line in f.read_text().splitlines() if line.strip())
    return out


def test_driver_killed_mid_sweep_resumes_without_rerunning_finished_trials(stores, tmp_path):
    from ecgtune.searchers import saved_searcher

    storage = tmp_path / "runs"
    # One backbone for every trial: the trials that start after the resume must load the one pretrained
    # before the kill, not pretrain it again.
    spec_file = write_spec(tmp_path / "spec.yaml", stores, storage, num_samples=5, one_backbone=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ecgtune", "sweep", str(spec_file)]
    driver = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 240
    experiment = None
    try:
        while time.time() < deadline:
            time.sleep(1)
            runs = list(storage.glob("sweeptest-*"))
            if runs:
                experiment = runs[0]
                # Two trials past ASHA's first rung (1 pretraining + 1 fine-tuning epoch), so the
                # interrupted sweep's rungs hold values the resumed one must not forget.
                done = [n for n in _trials_with_results(experiment).values() if n >= 2]
                if len(done) >= 2:
                    break
        else:
            pytest.fail("the sweep did not get going within 240 s")
    finally:
        # SIGKILL the whole process group: the driver and the local Ray it started.
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = _trials_with_results(experiment)
    finished_before = {name for name, n in before.items() if n >= MAX_EPOCHS}
    (entry,) = BackboneStore(storage / "backbones").entries()  # written before the kill
    # The killed sweep has no summary, but its spec.yaml (written at the start) for a report to read.
    assert not (experiment / "summary.json").exists()
    assert load_spec(experiment / "spec.yaml").name == "sweeptest"

    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # Tune restores the searcher, not the scheduler: ecgtune's ASHA rebuilt its rungs from every result
    # reported before the kill (tests/test_search_logic.py checks it then decides as if uninterrupted).
    rebuilt = re.search(r"ASHA, resumed: rungs rebuilt from (\d+) results of (\d+) trials", resumed.stdout)
    assert rebuilt, resumed.stdout[-3000:]
    # Every complete line of every trial's result.json (a line the kill cut short is skipped).
    assert sum(before.values()) - len(before) <= int(rebuilt[1]) <= sum(before.values()), (rebuilt[0], before)
    assert int(rebuilt[2]) == len(before), (rebuilt[0], before)
    after = _trials_with_results(experiment)
    summary = json.loads((experiment / "summary.json").read_text())
    ids = [t["trial_id"] for t in summary["trials"]]
    assert len(ids) == len(set(ids)) == 5
    # A trial that had finished before the kill did not run again.
    for name in finished_before:
        assert after[name] == before[name]
    # Every trial that started after the resume reused the backbone stored before the kill.
    started_after = [t for t in summary["trials"] if Path(t["path"]).name not in before]
    assert started_after, "no trial started after the resume"
    for t in started_after:
        assert t["backbone"]["origin"] == "reused" and t["backbone"]["key"] == entry.key, t["backbone"]
    assert [e.key for e in BackboneStore(storage / "backbones").entries()] == [entry.key]
    assert all(n <= MAX_EPOCHS for n in after.values())
    # The searcher Tune restored and saved at the end still holds, on ASHA's clock, what every trial
    # reported (the value a stopped trial was stopped on included), and no Optuna trial is left running.
    searcher = saved_searcher(str(experiment))
    check_optuna(searcher, summary, reported(experiment), "finetune_epoch")
    check_counts(summary, searcher)

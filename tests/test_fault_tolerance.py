"""Sweeps on a simulated multi-node Ray cluster: placement, node loss, trial crashes, one process per trial.

One `ray.cluster_utils.Cluster` serves the module: a head with no CPUs (it runs only the GCS; the
driver is this pytest process) and two worker raylets with 1 CPU each, every socket on 127.0.0.1
(conftest). Trials need 1 CPU, so each worker node runs at most one trial at a time and two
concurrent trials must land on different nodes. Each test connects its own driver
(`ray.init(address=...)`) and disconnects it afterwards; the cluster is shut down in the fixture's
`finally`. What the trials did is read back from Tune's per-trial result.json (one line per
reported epoch, with `node_id`, Tune's `pid` and `cuda_bytes_at_start`) and from summary.json.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from synthetic import write_synthetic_store

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SNAPSHOT_WARNING = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    write_synthetic_store(root / "deepfake", 40, seed=0, source="deepfake")
    # Slower pretraining epochs (~0.8 s instead of ~0.2 s) leave time to kill a node mid-trial.
    write_synthetic_store(root / "deepfake_big", 200, seed=2, source="deepfake")
    write_synthetic_store(root / "ptbxl", 30, seed=1, gain=1.5, source="ptbxl")
    (root / "ptbxl" / "test.i16").unlink()  # the sweep must never read PTB-XL's test fold
    return root


def write_spec(
    path: Path,
    stores: Path,
    *,
    name: str,
    num_samples: int,
    concurrent: int,
    pretrain_epochs: int = 1,
    finetune_epochs: int = 1,
    max_failures: int = 0,
    pretrain_store: str = "deepfake",
    gpu: float = 0,
    reuse_actors: bool = False,
    one_backbone: bool = False,
) -> Path:
    """A fixed-length sweep (no ASHA: every trial is meant to run all its epochs). `one_backbone`:
    num_blocks fixed, so every trial needs the same pretrained backbone."""
    spec = {
        "name": name,
        "model": {"name": "resnet_tiny", "params": {"stem_widths": [8, 8], "block_widths": [8, 8]}},
        "targets": ["hr", "pr", "qrs", "qt"],
        "data": {
            "pretrain": {"path": str(stores / pretrain_store)},
            "finetune": {"path": str(stores / "ptbxl")},
        },
        "stages": {
            "pretrain": {"epochs": pretrain_epochs, "batch_size": 8},
            "finetune": {"epochs": finetune_epochs, "batch_size": 8},
        },
        "search": {
            "space": {
                "model.num_blocks": {"type": "int", "low": 1, "high": 2},
                "finetune.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            },
            "num_samples": num_samples,
            "max_concurrent_trials": concurrent,
            "searcher": {"seed": 0, "n_startup_trials": num_samples},
            "asha": None,
        },
        "resources": {"cpu": 1, "gpu": gpu},
        "run": {
            "storage_path": str(path.parent / "runs"),
            "max_failures": max_failures,
            "checkpoints_kept": 1,
            "reuse_actors": reuse_actors,
        },
    }
    if one_backbone:
        del spec["search"]["space"]["model.num_blocks"]
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # Ray's own temp dir for this cluster (short: Unix socket paths must stay under 108 bytes), so that
    # nothing of another Ray on this host is shared. Raylets and their workers inherit it.
    ray_tmp = tempfile.mkdtemp(prefix="ray-ft-", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_tmp
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            c.add_node(num_cpus=1)
        c.wait_for_nodes()
        yield c
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if c is not None:
            c.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(ray_tmp, ignore_errors=True)


@contextmanager
def driver(cluster):
    """A driver connected to the cluster (this process)."""
    import ray

    # The driver is this process: quiet Tune's warning about frequent snapshots (one per epoch here).
    saved = os.environ.get(SNAPSHOT_WARNING)
    os.environ[SNAPSHOT_WARNING] = "0"
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop(SNAPSHOT_WARNING, None)
        else:
            os.environ[SNAPSHOT_WARNING] = saved


def worker_node_ids(cluster) -> set[str]:
    return {n.node_id for n in cluster.worker_nodes}


def trial_results(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    """trial dir name -> the results it reported so far (result.json lines), oldest first."""
    out = {}
    for f in sorted(experiment.glob("*/result.json")):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written right now
                break
        out[f.parent.name] = rows
    return out


def restarts(rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(last epoch before, first epoch after) for each change of worker process within one trial."""
    return [(a["epoch"], b["epoch"]) for a, b in zip(rows, rows[1:], strict=False) if a["pid"] != b["pid"]]


def epochs_lost(rows: list[dict[str, Any]]) -> int:
    """Epochs a trial reported twice (a restart that resumed before its last reported epoch)."""
    return sum(max(0, before + 1 - after) for before, after in restarts(rows))


def failures(trial_dir: Path) -> int:
    """Failures Tune recorded for a trial (it appends a `Failure # N` block to error.txt per failure)."""
    error_txt = trial_dir / "error.txt"
    return error_txt.read_text().count("Failure # ") if error_txt.exists() else 0


def check_epoch_sequence(rows: list[dict[str, Any]], max_epochs: int) -> None:
    """1..max_epochs in order with no gap; a restart may step back (repeat) at most one epoch."""
    epochs = [r["epoch"] for r in rows]
    assert epochs[0] == 1 and epochs[-1] == max_epochs, epochs
    assert sorted(set(epochs)) == list(range(1, max_epochs + 1)), epochs
    for a, b in zip(epochs, epochs[1:], strict=False):
        assert b in (a, a + 1), f"epoch {a} followed by {b}: {epochs}"


# ---------------------------------------------------------------------------------------------------
# 1 + 4: placement over two worker nodes, and one fresh worker process per trial


@pytest.fixture(scope="module")
def two_node_sweep(cluster, stores, tmp_path_factory):
    from ecgtune.search import run_sweep

    spec = write_spec(
        tmp_path_factory.mktemp("twonode") / "spec.yaml", stores, name="twonode", num_samples=3, concurrent=2
    )
    workers = worker_node_ids(cluster)
    with driver(cluster):
        result = run_sweep(spec)
    return result, trial_results(Path(result.experiment_path)), workers


def test_trials_of_one_sweep_run_on_both_worker_nodes(two_node_sweep, cluster):
    result, rows, workers = two_node_sweep
    trials = result.summary["trials"]
    assert len(trials) == 3
    assert all(t["status"] == "finished" and t["epochs"] == 2 for t in trials), trials
    ran_on = {t["node_id"] for t in trials}
    print(f"\n[multi-node] trial -> node: { {t['trial_id']: t['node_id'][:8] for t in trials} }")
    assert len(ran_on) >= 2, ran_on
    assert ran_on <= workers, "a trial ran on the head node, which has no CPU to give"
    assert cluster.head_node.node_id not in ran_on
    # summary.json's node_id is the one every epoch of that trial reported.
    for t in trials:
        assert {r["node_id"] for r in rows[f"trial_{t['trial_id']}"]} == {t["node_id"]}


def test_two_nodes_share_one_backbone_store(cluster, stores, tmp_path):
    """Two trials needing one backbone start at once, one on each node: exactly one pretrains it, the
    other waits for its claim and loads the entry it wrote, through the store both nodes see."""
    from ecgtune.backbones import BackboneStore
    from ecgtune.search import run_sweep

    spec = write_spec(
        tmp_path / "spec.yaml", stores, name="sharednodes", num_samples=2, concurrent=2, pretrain_epochs=3,
        pretrain_store="deepfake_big", one_backbone=True,
    )  # fmt: skip
    with driver(cluster):
        result = run_sweep(spec)
    trials = result.summary["trials"]
    assert all(t["status"] == "finished" for t in trials), trials
    assert len({t["node_id"] for t in trials}) == 2, "the two trials ran on one node"
    pretrainer = [t for t in trials if t["backbone"]["origin"] == "pretrained"]
    reuser = [t for t in trials if t["backbone"]["origin"] == "reused"]
    assert len(pretrainer) == len(reuser) == 1, [t["backbone"] for t in trials]
    assert reuser[0]["backbone"]["from"].startswith(f"trial {pretrainer[0]['trial_id']} ")
    assert reuser[0]["node_id"] != pretrainer[0]["node_id"]
    (entry,) = BackboneStore(tmp_path / "runs" / "backbones").entries()
    assert (
        entry.key == pretrainer[0]["backbone"]["key"]
        and entry.provenance["trial"] == pretrainer[0]["trial_id"]
    )


def test_each_trial_runs_in_a_fresh_worker_process(two_node_sweep):
    """Tune starts a new worker process per trial (function trainable, reuse_actors=False).

    A process that ends frees everything it held, device memory included, so a stopped trial cannot
    leave CUDA memory behind for the next one. Three trials on two 1-CPU nodes means at least one
    node ran two trials one after the other: they still had different processes.
    """
    _, rows, _ = two_node_sweep
    pids = {name: {r["pid"] for r in rs} for name, rs in rows.items()}
    print(f"\n[processes] trial -> pids: {pids}")
    assert all(len(p) == 1 for p in pids.values()), "no trial failed, so none should have restarted"
    all_pids = [p for ps in pids.values() for p in ps]
    assert len(set(all_pids)) == len(all_pids) == 3
    # Ran sequentially on one node, yet each in a new process:
    nodes = [rs[0]["node_id"] for rs in rows.values()]
    assert len(set(nodes)) < len(nodes)
    assert all(r["cuda_bytes_at_start"] == 0 for rs in rows.values() for r in rs)


def test_reused_worker_process_starts_each_trial_afresh(cluster, stores, tmp_path):
    """run.reuse_actors: one process runs the trials one after another, yet each trial starts at its
    own epoch 1 with its own config, and nothing of the previous trial is left allocated."""
    from ecgtune.search import run_sweep

    spec = write_spec(
        tmp_path / "spec.yaml", stores, name="reuse", num_samples=3, concurrent=1, reuse_actors=True
    )
    with driver(cluster):
        result = run_sweep(spec)
    rows = trial_results(Path(result.experiment_path))
    assert [t["status"] for t in result.summary["trials"]] == ["finished"] * 3
    pids = {rs[0]["pid"] for rs in rows.values()}
    print(f"\n[reuse] trial -> pid: { {name: rs[0]['pid'] for name, rs in rows.items()} }")
    assert len(pids) < 3, "with reuse_actors the trials should share a worker process"
    assert all([r["epoch"] for r in rs] == [1, 2] for rs in rows.values())
    configs = [(rs[0]["config"]["model.num_blocks"], rs[0]["config"]["finetune.lr"]) for rs in rows.values()]
    assert len(set(configs)) == 3
    assert all(r["cuda_bytes_at_start"] == 0 for rs in rows.values() for r in rs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_memory_is_zero_at_the_start_of_every_trial(cluster, stores, tmp_path):
    """Trials that need a whole GPU run one after another on it; each starts with nothing allocated."""
    from ecgtune.search import run_sweep

    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        spec = write_spec(
            tmp_path / "spec.yaml", stores, name="gpu", num_samples=3, concurrent=3, finetune_epochs=2, gpu=1
        )
        with driver(cluster):
            result = run_sweep(spec)
    finally:
        cluster.remove_node(gpu_node)
    rows = trial_results(Path(result.experiment_path))
    assert [t["status"] for t in result.summary["trials"]] == ["finished"] * 3
    assert {t["node_id"] for t in result.summary["trials"]} == {gpu_node.node_id}
    starts = {name: [r["cuda_bytes_at_start"] for r in rs] for name, rs in rows.items()}
    print(f"\n[gpu] torch.cuda.memory_allocated() at trial start: {starts}")
    assert all(v == 0 for vs in starts.values() for v in vs)
    pids = [rs[0]["pid"] for rs in rows.values()]
    assert len(set(pids)) == 3


# ---------------------------------------------------------------------------------------------------
# 2: losing a worker node in the middle of a trial


def test_trial_on_a_lost_node_resumes_from_its_checkpoint_elsewhere(cluster, stores, tmp_path):
    from ecgtune.search import run_sweep

    pretrain, finetune = 4, 2
    max_epochs = pretrain + finetune
    spec = write_spec(
        tmp_path / "spec.yaml",
        stores,
        name="nodeloss",
        num_samples=2,
        concurrent=2,
        pretrain_epochs=pretrain,
        finetune_epochs=finetune,
        max_failures=2,
        pretrain_store="deepfake_big",
    )
    storage = tmp_path / "runs"
    outcome: dict[str, Any] = {}

    def sweep() -> None:
        try:
            outcome["result"] = run_sweep(spec)  # Tune runs fine off the main thread
        except BaseException as exc:
            outcome["exception"] = exc

    killed: dict[str, Any] = {}
    with driver(cluster):
        thread = threading.Thread(target=sweep, daemon=True)
        thread.start()
        # Adding a node registers signal handlers, so the cluster is changed from this (main) thread.
        deadline = time.time() + 180
        while "trial" not in killed and thread.is_alive() and time.time() < deadline:
            time.sleep(0.1)
            for experiment in storage.glob("nodeloss-*"):
                for name, rows in trial_results(experiment).items():
                    # A trial that has reported an epoch and has epochs to go: remove the node it runs on.
                    if "trial" in killed or not rows or not 1 <= rows[-1]["epoch"] <= max_epochs - 3:
                        continue
                    node = next((n for n in cluster.worker_nodes if n.node_id == rows[-1]["node_id"]), None)
                    if node is None:
                        continue
                    killed.update(trial=name, node_id=node.node_id, epoch=rows[-1]["epoch"], at=time.time())
                    cluster.remove_node(node, allow_graceful=False)
                    # Capacity stays two trials wide: a fresh node takes the lost one's place.
                    killed["replacement"] = cluster.add_node(num_cpus=1).node_id
        thread.join(timeout=300)
    assert not thread.is_alive(), "the sweep did not end within 300 s of the node loss"
    assert "exception" not in outcome, outcome.get("exception")
    assert "trial" in killed, "no trial was caught mid-run: nothing was killed"
    result = outcome["result"]

    trials = result.summary["trials"]
    assert len(trials) == 2 and len({t["trial_id"] for t in trials}) == 2
    assert all(t["status"] == "finished" and t["epochs"] == max_epochs for t in trials), trials

    rows = trial_results(Path(result.experiment_path))
    assert len(rows) == 2
    victim = rows[killed["trial"]]
    lost = {name: epochs_lost(rs) for name, rs in rows.items()}
    print(
        f"\n[node loss] removed node {killed['node_id'][:8]} while {killed['trial']} was past epoch "
        f"{killed['epoch']}; restarts (last epoch before, first after): {restarts(victim)}; "
        f"epochs re-run per trial: {lost}"
    )
    # The killed trial restarted once, in a new process on a node still in the cluster, from its checkpoint.
    assert len(restarts(victim)) == 1, "the trial on the removed node did not restart (exactly once)"
    ((before, after),) = restarts(victim)
    assert after >= before >= killed["epoch"], (
        "resumed before its last reported epoch: not from its checkpoint"
    )
    new_process = [r for r in victim if r["pid"] != victim[0]["pid"]]
    assert {r["node_id"] for r in new_process} <= worker_node_ids(cluster) - {killed["node_id"]}
    assert failures(Path(result.experiment_path) / killed["trial"]) == 1
    for rs in rows.values():
        check_epoch_sequence(rs, max_epochs)
    assert all(n <= 1 for n in lost.values()), lost


# ---------------------------------------------------------------------------------------------------
# 3: a trial that crashes (`run_trial` with a failure injected at an epoch, in place of `run_trial`)

INJECTED_MARKER = ".ecgtune-injected-failure"


def crashing_trial(at_epoch: int, *, always: bool = False):
    """`ecgtune.trial.run_trial` raising when it is about to train epoch `at_epoch`: on the first attempt
    only (the retry, restored from its checkpoint, goes on), or with `always` on every attempt.

    A closure, so Ray pickles it by value: the worker processes cannot import this test module.
    """

    def run_trial(config: dict[str, Any]) -> None:
        import pyarrow.fs
        from ray import tune

        from ecgtune.stages import TwoStageRun
        from ecgtune.trial import run_trial as trial

        def first_attempt() -> bool:
            # A marker beside the trial's checkpoints tells a retry from the first attempt: it outlives
            # the worker process and, unlike get_trial_dir() (node-local), every node sees it.
            storage = tune.get_context().get_storage()
            fs, marker = storage.storage_filesystem, f"{storage.trial_fs_path}/{INJECTED_MARKER}"
            if fs.get_file_info(marker).type != pyarrow.fs.FileType.NotFound:
                return False
            with fs.open_output_stream(marker):
                pass
            return True

        step = TwoStageRun.step

        def failing_step(run: TwoStageRun) -> dict[str, Any]:
            epoch = run.epochs_done + 1
            if epoch == at_epoch and (always or first_attempt()):
                raise RuntimeError(f"injected failure at epoch {epoch}")
            return step(run)

        TwoStageRun.step = failing_step
        try:
            trial(config)
        finally:
            TwoStageRun.step = step  # a reused worker runs the next trial unpatched

    return run_trial


def sweep_with(spec_path: Path, trainable) -> tuple[Path, dict[str, Any]]:
    """The sweep of `spec_path` as `run_sweep` runs it, with `trainable` in place of `run_trial`:
    the experiment directory and the summary."""
    from ecgtune.search import build_tuner, resolve_data
    from ecgtune.spec import load_spec
    from ecgtune.sweep_results import summarize

    spec = resolve_data(load_spec(spec_path))
    name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep = build_tuner(spec, spec.run.storage_path, name, trainable=trainable)
    summary = summarize(sweep.tuner.fit(), spec, sweep.searcher, wall_seconds=0.0)
    return Path(spec.run.storage_path) / name, summary


def test_trial_crashing_once_is_retried_from_its_checkpoint(cluster, stores, tmp_path):
    spec = write_spec(
        tmp_path / "spec.yaml",
        stores,
        name="crashonce",
        num_samples=1,
        concurrent=1,
        finetune_epochs=2,
        max_failures=1,
    )
    with driver(cluster):
        experiment, summary = sweep_with(spec, crashing_trial(2))
    (trial,) = summary["trials"]
    assert trial["status"] == "finished" and trial["epochs"] == 3 and trial["error"] is None, trial
    (rows,) = trial_results(experiment).values()
    print(f"\n[crash once] epochs reported: {[r['epoch'] for r in rows]}; restarts: {restarts(rows)}")
    # Epoch 1 in the first process, which raised before epoch 2; the retry resumed at epoch 2.
    assert restarts(rows) == [(1, 2)]
    check_epoch_sequence(rows, 3)
    assert failures(Path(trial["path"])) == 1
    assert (Path(trial["path"]) / INJECTED_MARKER).exists()


def test_trial_crashing_every_time_ends_as_an_error_and_the_sweep_completes(cluster, stores, tmp_path):
    spec = write_spec(
        tmp_path / "spec.yaml",
        stores,
        name="crashalways",
        num_samples=2,
        concurrent=2,
        finetune_epochs=2,
        max_failures=1,
    )
    with driver(cluster):
        experiment, summary = sweep_with(spec, crashing_trial(2, always=True))  # errors do not fail it
    trials = summary["trials"]
    print(f"\n[crash always] {[(t['status'], t['epochs'], t['error']) for t in trials]}")
    assert len(trials) == 2
    for t in trials:
        assert t["status"] == "error" and t["epochs"] == 1, t
        assert "injected failure at epoch 2" in t["error"], t["error"]
    # Each trial failed 1 + max_failures times: epoch 1 and the failure at 2, then a retry restored from
    # epoch 1's checkpoint that failed again at 2 before reporting anything.
    for t in trials:
        assert failures(Path(t["path"])) == 2
    for rows in trial_results(experiment).values():
        assert [r["epoch"] for r in rows] == [1]

"""Cluster scaling and recovery, with Ray nodes simulated on one machine (`ray.cluster_utils.Cluster`).

Three measurements of the sweep machinery (not of the models), for the closing note:
  1. throughput: trials/hour of the same small sweep on 1 vs 2 worker nodes (1 CPU each, a head
     with none). The nodes share this machine's cores, so the ratio shows what a second node buys
     here after CPU contention and per-trial overhead (new worker process, imports, Tune
     bookkeeping), not what it buys on two machines.
  2. node loss: a worker node removed while a trial runs on it (a fresh node replaces it);
     max_failures=2 restores the trial from its last checkpoint on another node. Per trial: epochs
     reported twice (re-run after the restart), seconds of training lost (the epoch in progress when
     the node died) and seconds from the node's death to the trial's next result.
  3. driver loss: `ecgtune sweep SPEC` (its own local Ray) SIGKILLed with its process group once a
     trial has reported; then the time from launching `ecgtune sweep SPEC --resume` to the first new
     result line in any trial's result.json, and until the resumed sweep has finished.

The sides of (1) alternate (1 node, 2 nodes, node loss, 1 node, 2 nodes, ...) over `--repeats`, so a
slow spell of a shared machine hits each alike; medians and per-repeat ratios are quoted. Every Ray
process binds 127.0.0.1 and lives under a temporary RAY_TMPDIR of this script; clusters are shut down
in `finally`, and processes left by the killed driver are reaped by PID (never `ray stop`).

    python -m bench.cluster_scaling --out bench/results/cluster_scaling.json
    python -m bench.cluster_scaling --quick     # ~3 minutes: shows the script works, measures little
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import finish_args, fmt, log, make_parser, print_tables, stats, table, write_json
from ecgtune.testing import write_synthetic_store

SCRIPT = "cluster_scaling"
SNAPSHOT_WARNING = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"


# ------------------------------------------------------------------------------------------ environment


def ray_environment(root: Path) -> None:
    """Ray kept on loopback, with its own temp dir and auth token (as tests/conftest.py sets them)."""
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    os.environ.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_DEDUP_LOGS="0",
        RAY_AIR_NEW_OUTPUT="0",
        RAY_TMPDIR=str(root / "ray"),  # short: Unix socket paths must stay under 108 bytes
        **{SNAPSHOT_WARNING: "0"},
    )
    (root / "ray").mkdir()
    os.environ.pop("RAY_ADDRESS", None)


def write_stores(root: Path) -> Path:
    write_synthetic_store(root / "deepfake", 200, seed=2, source="deepfake")  # ~0.8 s per epoch
    write_synthetic_store(root / "ptbxl", 30, seed=1, gain=1.5, source="ptbxl")
    return root


def write_spec(
    path: Path, stores: Path, name: str, trials: int, pretrain: int, finetune: int, max_failures: int
) -> Path:
    spec = {
        "name": name,
        "model": {"name": "resnet_tiny", "params": {"stem_widths": [8, 8], "block_widths": [8, 8]}},
        "data": {"pretrain": {"path": str(stores / "deepfake")}, "finetune": {"path": str(stores / "ptbxl")}},
        "stages": {
            "pretrain": {"epochs": pretrain, "batch_size": 8},
            "finetune": {"epochs": finetune, "batch_size": 8},
        },
        "search": {
            "space": {
                "model.num_blocks": {"type": "int", "low": 1, "high": 2},
                "finetune.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            },
            "num_samples": trials,
            "max_concurrent_trials": 2,
            "searcher": {"seed": 0, "n_startup_trials": trials},
            "asha": None,  # every trial does the same work: trials/hour compares like with like
        },
        "resources": {"cpu": 1, "gpu": 0},
        "run": {
            "storage_path": str(path.parent / "runs"),
            "max_failures": max_failures,
            "checkpoints_kept": 1,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


# --------------------------------------------------------------------------------------- result files


def trial_results(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for f in sorted(experiment.glob("*/result.json")):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # being written
                break
        out[f.parent.name] = rows
    return out


def result_lines(storage: Path) -> int:
    return sum(len(rows) for e in storage.glob("*-*") for rows in trial_results(e).values())


def epochs_rerun(rows: list[dict[str, Any]]) -> int:
    """Epochs reported twice: a restart (new pid) that resumed before its last reported epoch + 1."""
    pairs = zip(rows, rows[1:], strict=False)
    return sum(max(0, a["epoch"] + 1 - b["epoch"]) for a, b in pairs if a["pid"] != b["pid"])


# ------------------------------------------------------------------------------------------- clusters


def start_cluster(workers: int):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(workers):
            c.add_node(num_cpus=1)
        c.wait_for_nodes()
    except BaseException:
        c.shutdown()
        raise
    return c


def sweep_on_cluster(workers: int, spec: Path, kill_node: bool = False) -> dict[str, Any]:
    """Run the sweep of `spec` on a fresh cluster of `workers` 1-CPU nodes; optionally lose a node."""
    import ray

    from ecgtune.search import run_sweep

    t0 = time.perf_counter()
    cluster = start_cluster(workers)
    start_s = time.perf_counter() - t0
    outcome: dict[str, Any] = {}
    killed: dict[str, Any] = {}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            thread = threading.Thread(target=lambda: outcome.update(result=run_sweep(spec)), daemon=True)
            thread.start()
            storage = spec.parent / "runs"
            while thread.is_alive():
                thread.join(0.1)
                if kill_node and "trial" not in killed:
                    _maybe_kill(cluster, storage, killed)
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()
    if "result" not in outcome:
        raise RuntimeError("the sweep raised (see its traceback above)")
    result = outcome["result"]
    trials = result.summary["trials"]
    out = {
        "workers": workers,
        "cluster_start_s": start_s,
        "fit_s": result.summary["wall_seconds"],
        "trials": len(trials),
        "finished": sum(t["status"] == "finished" for t in trials),
        "nodes_used": len({t["node_id"] for t in trials}),
    }
    if kill_node:
        out.update(_node_loss_figures(Path(result.experiment_path), killed))
    return out


def _maybe_kill(cluster, storage: Path, killed: dict[str, Any]) -> None:
    """Remove the node of a trial that has reported an epoch and has 2 or more to go; add a fresh node."""
    for experiment in storage.glob("*-*"):
        for name, rows in trial_results(experiment).items():
            if not rows or not 1 <= rows[-1]["epoch"] <= rows[-1]["total_epochs"] - 2:
                continue
            node = next((n for n in cluster.worker_nodes if n.node_id == rows[-1]["node_id"]), None)
            if node is None:
                continue
            killed.update(
                trial=name, epoch=rows[-1]["epoch"], last_report=rows[-1]["timestamp"], at=time.time()
            )
            cluster.remove_node(node, allow_graceful=False)
            cluster.add_node(num_cpus=1)
            return


def _node_loss_figures(experiment: Path, killed: dict[str, Any]) -> dict[str, Any]:
    if "trial" not in killed:
        return {"killed": None}
    rows = trial_results(experiment)
    victim = rows[killed["trial"]]
    old_pid = victim[0]["pid"]
    after = [r for r in victim if r["pid"] != old_pid]
    return {
        "killed": {"trial": killed["trial"], "after_epoch": killed["epoch"]},
        "epochs_rerun_per_trial": {name: epochs_rerun(rs) for name, rs in rows.items()},
        # Tune's timestamps are whole seconds: these two are good to about a second.
        "training_lost_s": killed["at"] - killed["last_report"],
        "recovery_s": (after[0]["timestamp"] - killed["at"]) if after else None,
        "resumed_at_epoch": after[0]["epoch"] if after else None,
    }


# ---------------------------------------------------------------------------------------- driver loss


def driver_loss(spec: Path, timeout: float = 300) -> dict[str, Any]:
    """SIGKILL a sweep's driver (and its local Ray) mid-sweep; time `--resume` to its first new result."""
    storage = spec.parent / "runs"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # this driver's Ray only: reaped below
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(ray_tmp)}
    cmd = [sys.executable, "-m", "ecgtune", "sweep", str(spec)]
    try:
        driver = subprocess.Popen(
            cmd,
            env=env,
            start_new_session=True,
            stdout=(spec.parent / "driver.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + timeout
            while time.time() < deadline and driver.poll() is None:
                time.sleep(0.2)
                experiments = list(storage.glob("*-*"))
                if experiments and any(
                    rows and rows[-1]["epoch"] < rows[-1]["total_epochs"]
                    for rows in trial_results(experiments[0]).values()
                ):
                    break
            else:
                raise RuntimeError("the sweep ended or did not get going before it could be killed")
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
            _reap(ray_tmp)
        lines_before = result_lines(storage)
        t0, launched = time.perf_counter(), time.time()
        resumed = subprocess.Popen(
            [*cmd, "--resume"],
            env=env,
            start_new_session=True,
            stdout=(spec.parent / "resume.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        first_new = None
        try:
            while resumed.poll() is None and time.perf_counter() - t0 < timeout:
                time.sleep(0.1)
                if first_new is None and result_lines(storage) > lines_before:
                    first_new = time.perf_counter() - t0
            total = time.perf_counter() - t0
            if resumed.poll() is None:
                raise RuntimeError(f"the resumed sweep did not finish within {timeout} s")
        finally:
            if resumed.poll() is None:
                os.killpg(resumed.pid, signal.SIGKILL)
            resumed.wait()
            _reap(ray_tmp)
        summary = json.loads(next(storage.glob("*-*/summary.json")).read_text())
        return {
            "resume_to_first_result_s": first_new,
            # Where that time goes, from the resumed driver's log: its local Ray up, Tune's state restored.
            "resume_to_ray_up_s": _logged_at(spec.parent / "resume.log", "Started a local Ray", launched),
            "resume_to_tune_restored_s": _logged_at(
                spec.parent / "resume.log", "Restoring the run", launched
            ),
            "resume_total_s": total,
            "returncode": resumed.returncode,
            "trials": len(summary["trials"]),
            "finished": sum(t["status"] == "finished" for t in summary["trials"]),
        }
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _logged_at(log_file: Path, text: str, since: float) -> float | None:
    """Seconds from `since` (unix time) to the first log line containing `text` (Ray's own timestamps)."""
    for line in log_file.read_text(errors="replace").splitlines():
        if text in line:
            try:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            except ValueError:
                return None
            return stamp.timestamp() - since
    return None


def _reap(ray_tmp: Path) -> None:
    """SIGKILL, one PID at a time, processes left behind by a killed driver: those whose environment
    carries this run's own RAY_TMPDIR (set only for the driver we started, inherited by its Ray)."""
    marker = f"RAY_TMPDIR={ray_tmp}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    p = make_parser(SCRIPT, __doc__)
    p.add_argument(
        "--trials", type=int, default=None, help="trials of the throughput sweep (default 6; 2 quick)"
    )
    args = p.parse_args()
    finish_args(args, SCRIPT, repeats_full=3, repeats_quick=1)
    if args.trials is None:
        args.trials = 2 if args.quick else 6
    root = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    try:
        ray_environment(root)
        stores = write_stores(root / "stores")
        pretrain, finetune = (1, 1) if args.quick else (2, 2)
        runs: dict[str, list[dict[str, Any]]] = {
            "1 node": [],
            "2 nodes": [],
            "node loss": [],
            "driver loss": [],
        }
        for r in range(args.repeats):
            for workers in (1, 2):
                name = f"tp{workers}"
                spec = write_spec(
                    root / f"{name}-{r}" / "spec.yaml", stores, name, args.trials, pretrain, finetune, 0
                )
                m = sweep_on_cluster(workers, spec)
                m["trials_per_hour"] = m["trials"] / m["fit_s"] * 3600
                runs[f"{workers} node{'s' if workers > 1 else ''}"].append(m)
                rate = f"{m['trials']} trials in {m['fit_s']:.1f} s = {m['trials_per_hour']:.0f}/h"
                log(f"repeat {r + 1}: {workers} worker node(s): {rate} on {m['nodes_used']} node(s)")
            spec = write_spec(root / f"loss-{r}" / "spec.yaml", stores, "loss", 2, 3, 2, max_failures=2)
            m = sweep_on_cluster(2, spec, kill_node=True)
            runs["node loss"].append(m)
            log(f"repeat {r + 1}: node loss: {m}")
            spec = write_spec(root / f"driver-{r}" / "spec.yaml", stores, "driver", 3, 2, 2, max_failures=0)
            m = driver_loss(spec)
            runs["driver loss"].append(m)
            log(f"repeat {r + 1}: driver loss: {m}")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    one, two = runs["1 node"], runs["2 nodes"]
    ratio = [b["trials_per_hour"] / a["trials_per_hour"] for a, b in zip(one, two, strict=True)]
    loss = [m for m in runs["node loss"] if m.get("killed")]
    rerun = [n for m in loss for n in m["epochs_rerun_per_trial"].values()]
    results = {
        "runs": runs,
        "trials_per_hour": {k: stats([m["trials_per_hour"] for m in runs[k]]) for k in ("1 node", "2 nodes")},
        "ratio_2_to_1": {"per_repeat": ratio, **stats(ratio)},
        "node_loss": {
            "caught_mid_trial": len(loss),
            "epochs_rerun_per_trial": stats(rerun),
            "training_lost_s": stats([m["training_lost_s"] for m in loss]),
            "recovery_s": stats([m["recovery_s"] for m in loss if m["recovery_s"] is not None]),
            "all_finished": all(m["finished"] == m["trials"] for m in runs["node loss"]),
        },
        "driver_loss": {
            "resume_to_first_result_s": stats(
                [m["resume_to_first_result_s"] for m in runs["driver loss"] if m["resume_to_first_result_s"]]
            ),
            "resume_total_s": stats([m["resume_total_s"] for m in runs["driver loss"]]),
            "resume_to_ray_up_s": stats(
                [m["resume_to_ray_up_s"] for m in runs["driver loss"] if m["resume_to_ray_up_s"]]
            ),
            "resume_to_tune_restored_s": stats(
                [
                    m["resume_to_tune_restored_s"]
                    for m in runs["driver loss"]
                    if m["resume_to_tune_restored_s"]
                ]
            ),
            "all_finished": all(m["finished"] == m["trials"] for m in runs["driver loss"]),
        },
    }
    tph, epochs = results["trials_per_hour"], pretrain + finetune
    nl, dl = results["node_loss"], results["driver_loss"]
    kills = f"{nl['caught_mid_trial']}/{len(runs['node loss'])} kills mid-trial"
    rows = [
        [
            "trials/hour, 1 worker node",
            fmt(tph["1 node"]["median"], 0),
            f"{args.trials} trials x {epochs} epochs",
        ],
        ["trials/hour, 2 worker nodes", fmt(tph["2 nodes"]["median"], 0), "same sweep, same 2-core machine"],
        [
            "ratio 2 nodes / 1 node",
            f"{results['ratio_2_to_1']['median']:.2f}x",
            "median of per-repeat ratios",
        ],
        [
            "node loss: epochs re-run per trial",
            fmt(max(rerun, default=None)),
            f"max of {len(rerun)}; {kills}",
        ],
        ["node loss: training lost, s", fmt(nl["training_lost_s"]["median"]), "epoch in progress (+-1 s)"],
        ["node loss: node death -> next result, s", fmt(nl["recovery_s"]["median"]), "restored elsewhere"],
        [
            "driver loss: --resume -> first new result, s",
            fmt(dl["resume_to_first_result_s"]["median"]),
            f"Ray up {fmt(dl['resume_to_ray_up_s']['median'])} s, Tune restored "
            f"{fmt(dl['resume_to_tune_restored_s']['median'])} s, then trial start + 1 epoch",
        ],
        [
            "driver loss: --resume -> sweep done, s",
            fmt(dl["resume_total_s"]["median"]),
            "all finished" if dl["all_finished"] else "NOT all finished",
        ],
    ]
    tables = [
        table(
            ["measure", "value", "note"],
            rows,
            f"cluster scaling and recovery, {args.repeats} repeat(s), medians",
        )
    ]
    notes = ["--quick: these numbers only show the script works."] if args.quick else []
    path = write_json(args.out, SCRIPT, args, results, tables)
    log(f"wrote {path}")
    print_tables(tables, notes)


if __name__ == "__main__":
    main()

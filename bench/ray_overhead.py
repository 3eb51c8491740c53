"""Ray overhead of a sweep (benchmarks part 5): wall time outside the training loop, and driver memory.

Overhead: the same small sweep (the shipped smoke sweep on the embedded demo data) run one trial at a time,
so no slot ever idles waiting for a straggler; per trial,

    overhead = (sweep wall time - sum of every epoch's training + evaluation time) / trials

which holds everything that is not an epoch: worker process start, imports, opening the stores,
building the model, checkpoint writes, result reporting, scheduling. Two trial lengths — "short"
(the smoke sweep as shipped: ASHA, trials of seconds) and "long" (no ASHA, pretraining long enough
for a trial of about a minute) — each with a fresh worker process per trial (ecgtune's setting: a
stopped trial's GPU memory goes back) and with Tune's actor reuse, alternating.

Driver memory: a sweep of many one-epoch trials, two at a time, sampling the driver's resident
memory twice a second against the number of trials started (an open Ray report has driver memory
growing with trial count); reported as MiB per 10 trials over the second half of the run.

    python -m bench.ray_overhead --out bench/results/ray_overhead.json
    python -m bench.ray_overhead --quick          # 2 trials per run, 1-2 epochs: shows it works
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

from bench.common import finish_args, log, make_parser, print_tables, stats, table, write_json
from ecgtune.shipped import sweep_spec_path


def ray_rss_bytes(driver_pid: int) -> int:
    """Resident memory of the driver plus every process whose command line names Ray."""
    total = 0
    for p in psutil.process_iter(["pid", "cmdline", "memory_info"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["pid"] == driver_pid or "ray" in cmd.split("/")[-1] or "ray::" in cmd or "/ray/" in cmd:
                total += p.info["memory_info"].rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError):
            continue
    return total


def epoch_seconds(experiment: Path) -> tuple[int, float]:
    """Trials and the sum of their epochs' training + evaluation seconds, from the trials' result.json."""
    trials, total = 0, 0.0
    for f in experiment.glob("*/result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            trials += 1
            total += sum(r["epoch_seconds"] for r in rows)
    return trials, total


def sweep_once(spec: dict, tmp: Path, reuse_actors: bool) -> dict:
    from ecgtune.search import run_sweep

    spec = {**spec, "run": {**spec["run"], "reuse_actors": reuse_actors}}
    spec_file = tmp / f"{spec['name']}.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    t0 = time.time()
    result = run_sweep(spec_file)
    wall = time.time() - t0
    trials, busy = epoch_seconds(Path(result.experiment_path))
    overhead = (wall - busy) / max(trials, 1)
    return {
        "trials": trials,
        "wall_s": wall,
        "epoch_s": busy,
        "overhead_per_trial_s": overhead,
        "mean_trial_s": wall / max(trials, 1),
        "overhead_share": (wall - busy) / wall,
    }


def overhead_specs(base: dict, args) -> dict[str, dict]:
    short = copy.deepcopy(base)
    short["name"] = "overhead-short"
    short["search"]["max_concurrent_trials"] = 1
    long = copy.deepcopy(base)
    long["name"] = "overhead-long"
    long["search"]["max_concurrent_trials"] = 1
    long["search"]["num_samples"] = args.long_trials
    long["search"]["asha"] = None
    long["stages"]["pretrain"]["epochs"] = args.long_pretrain_epochs
    if args.quick:
        for s in (short, long):
            s["search"]["num_samples"] = 2
            s["stages"]["pretrain"].update(epochs=1, samples_per_epoch=32)
            s["stages"]["finetune"]["epochs"] = 1
            s["search"]["asha"] = None
    return {"short": short, "long": long}


def driver_memory(base: dict, tmp: Path, args) -> dict:
    spec = copy.deepcopy(base)
    spec["name"] = "overhead-memory"
    spec["search"]["num_samples"] = args.memory_trials
    spec["search"]["asha"] = None
    spec["stages"]["pretrain"].update(epochs=1, samples_per_epoch=16)
    spec["stages"]["finetune"].update(epochs=1, samples_per_epoch=16)
    storage = Path(spec["run"]["storage_path"])
    me = psutil.Process(os.getpid())
    samples: list[tuple[float, int, int, int]] = []  # time, trials started, driver RSS, Ray + driver RSS
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            started = len(list(storage.glob("overhead-memory-*/*/params.json")))
            samples.append((time.time(), started, me.memory_info().rss, ray_rss_bytes(os.getpid())))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = sweep_once(spec, tmp, reuse_actors=False)
    finally:
        stop.set()
        sampler.join()
    t = np.array([s[1] for s in samples], float)
    rss = np.array([s[2] for s in samples], float) / 2**20
    half = t >= t.max() / 2
    slope = None
    if half.sum() > 2 and np.ptp(t[half]) > 0:
        slope = float(np.polyfit(t[half], rss[half], 1)[0]) * 10
    at = {}
    for k in sorted({max(1, int(t.max()) // 4), max(1, int(t.max()) // 2), int(t.max())}):
        sel = rss[t >= k]
        at[k] = float(sel[0]) if len(sel) else None
    return {
        "trials": run["trials"],
        "wall_s": run["wall_s"],
        "driver_mib_at_trials": at,
        "driver_mib_per_10_trials_second_half": slope,
        "peak_ray_plus_driver_gib": max(s[3] for s in samples) / 2**30 if samples else None,
        "samples": samples[:: max(1, len(samples) // 300)],
    }


def main() -> None:
    p = make_parser("ray_overhead", __doc__)
    p.add_argument("--spec", default="smoke", help="a spec file or a shipped sweep's name")
    p.add_argument("--long-pretrain-epochs", type=int, default=30, help="pretraining epochs of a long trial")
    p.add_argument("--long-trials", type=int, default=3)
    p.add_argument("--memory-trials", type=int, default=None, help="trials of the memory run (60; quick 4)")
    args = p.parse_args()
    finish_args(args, "ray_overhead", repeats_full=1, repeats_quick=1)
    args.memory_trials = args.memory_trials or (4 if args.quick else 60)

    import ray

    from ecgtune.data.demo import build_demo
    from ecgtune.data.locate import data_root

    base = yaml.safe_load(sweep_spec_path(args.spec).read_text())
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    build_demo(data_root() / "demo")  # built before the clock starts (minutes on first use)
    results: dict = {"overhead": {}, "memory": None}
    with tempfile.TemporaryDirectory(prefix="ecgtune-bench-ray-") as tmp_name:
        tmp = Path(tmp_name)
        base["run"]["storage_path"] = str(tmp / "runs")
        t0 = time.time()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        results["ray_init_s"] = time.time() - t0
        specs = overhead_specs(base, args)
        for length, spec in specs.items():
            runs: dict[str, list[dict]] = {"fresh process": [], "actor reuse": []}
            for rep in range(args.repeats):
                for mode, reuse in (("fresh process", False), ("actor reuse", True)):
                    r = sweep_once(spec, tmp, reuse)
                    log(
                        f"  {length} {mode} repeat {rep + 1}/{args.repeats}: {r['trials']} trials, wall "
                        f"{r['wall_s']:.1f} s, overhead {r['overhead_per_trial_s']:.2f} s/trial "
                        f"({r['overhead_share']:.1%})"
                    )
                    runs[mode].append(r)
            results["overhead"][length] = runs
        results["memory"] = driver_memory(base, tmp, args)
        ray.shutdown()

    rows = []
    for length, runs in results["overhead"].items():
        for mode, rs in runs.items():
            per = stats([r["overhead_per_trial_s"] for r in rs])
            share = stats([r["overhead_share"] for r in rs])
            rows.append(
                [
                    length,
                    mode,
                    str(rs[0]["trials"]),
                    f"{np.median([r['mean_trial_s'] for r in rs]):.1f}",
                    f"{per['median']:.2f}",
                    f"{share['median']:.1%}",
                ]
            )
    mem = results["memory"]
    tables = [
        table(
            ["trials", "worker", "trials/run", "wall s per trial", "overhead s per trial", "overhead share"],
            rows,
            title=(
                f"Ray overhead per trial: wall time outside training + evaluation, one trial at a time, "
                f"median of {args.repeats} alternating repeat(s)"
                f"{' [QUICK: not a measurement]' if args.quick else ''}"
            ),
        ),
        table(
            ["measure", "value"],
            [
                ["trials in the run (2 at a time, 2 epochs each)", str(mem["trials"])],
                *[
                    [f"driver RSS at {k} trials started (MiB)", f"{v:.0f}"]
                    for k, v in mem["driver_mib_at_trials"].items()
                    if v
                ],
                [
                    "driver RSS growth, second half (MiB per 10 trials)",
                    f"{mem['driver_mib_per_10_trials_second_half']:.1f}"
                    if mem["driver_mib_per_10_trials_second_half"] is not None
                    else "-",
                ],
                ["peak RSS of Ray processes + driver (GiB)", f"{mem['peak_ray_plus_driver_gib']:.2f}"],
                ["ray.init (s)", f"{results['ray_init_s']:.1f}"],
            ],
            title="Driver memory against trials started",
        ),
    ]
    out = write_json(Path(args.out), "ray_overhead", args, results, tables)
    print_tables(tables, notes=[f"wrote {out}"])


if __name__ == "__main__":
    main()

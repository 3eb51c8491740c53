"""Ray overhead of a sweep (benchmarks part 5): time outside the training loop, and Ray's memory.

Runs a sweep spec (default sweeps/smoke.yaml on the embedded demo data) on a local Ray, sampling the
resident memory of every Ray process (and the driver) twice a second, then reads the results:

- per trial: wall time from the trial's first to last report is Tune's `time_total_s`; inside it,
  the training loop is `train_seconds` plus evaluation (`time_this_iter_s` − `train_seconds`);
- per trial overhead = its share of (sweep wall × concurrency − Σ trial time_total_s): process
  start, imports, data opening, scheduling and checkpoint uploads — everything that is not an epoch.

    python bench/ray_overhead.py --out bench/results/ray_overhead.json
    python bench/ray_overhead.py --quick          # 3 trials, 2 epochs
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, finish_args, make_parser, print_tables, table, write_json  # noqa: E402


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


def main() -> None:
    p = make_parser("ray_overhead", __doc__)
    p.add_argument("--spec", default=str(REPO / "sweeps" / "smoke.yaml"))
    args = p.parse_args()
    finish_args(args, "ray_overhead", 1, 1)

    import ray

    from ecgtune.search import run_sweep

    spec = yaml.safe_load(Path(args.spec).read_text())
    if args.quick:
        spec["search"]["num_samples"] = 3
        spec["stages"]["pretrain"].update(epochs=1, samples_per_epoch=64)
        spec["stages"]["finetune"]["epochs"] = 1
        spec["search"]["asha"]["grace_period"] = 1
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), ray_rss_bytes(os.getpid())))
            stop.wait(0.5)

    with tempfile.TemporaryDirectory() as tmp:
        spec["run"]["storage_path"] = tmp
        spec_file = Path(tmp) / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(spec))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.time()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        t_ray = time.time() - t0
        t1 = time.time()
        result = run_sweep(spec_file)
        sweep_wall = time.time() - t1
        ray.shutdown()
        stop.set()
        sampler.join()
        trials = []
        for f in Path(result.experiment_path).glob("*/result.json"):
            rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            if not rows:
                continue
            loop = sum(r["time_this_iter_s"] for r in rows)
            trials.append(
                {
                    "trial": f.parent.name,
                    "epochs": len(rows),
                    "time_total_s": rows[-1]["time_total_s"],
                    "train_s": sum(r["train_seconds"] for r in rows),
                    "loop_s": loop,
                }
            )

    concurrency = spec["search"]["max_concurrent_trials"]
    busy = sum(t["time_total_s"] for t in trials)
    overhead_per_trial = max(sweep_wall * concurrency - busy, 0.0) / max(len(trials), 1)
    mean_trial = busy / max(len(trials), 1)
    peak = max(b for _, b in samples) if samples else 0
    results = {
        "ray_init_s": t_ray,
        "sweep_wall_s": sweep_wall,
        "concurrency": concurrency,
        "trials": trials,
        "mean_trial_time_total_s": mean_trial,
        "overhead_per_trial_s": overhead_per_trial,
        "overhead_share": overhead_per_trial / (overhead_per_trial + mean_trial) if trials else None,
        "peak_ray_rss_bytes": peak,
        "rss_samples": samples[:: max(1, len(samples) // 200)],
    }
    rows = [
        ["trials", str(len(trials))],
        ["ray.init (s)", f"{t_ray:.1f}"],
        ["sweep wall (s)", f"{sweep_wall:.1f}"],
        ["mean trial time inside the trainable (s)", f"{mean_trial:.1f}"],
        ["overhead per trial (s)", f"{overhead_per_trial:.1f}"],
        ["overhead share of trial time", f"{results['overhead_share']:.0%}" if trials else "-"],
        ["peak RSS of Ray processes + driver (GiB)", f"{peak / 2**30:.2f}"],
    ]
    tables = [table(["measure", "value"], rows, title="Ray overhead of one sweep")]
    write_json(Path(args.out), "ray_overhead", args, results, tables)
    print_tables(tables)


if __name__ == "__main__":
    main()

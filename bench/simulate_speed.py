"""Simulator speed (issue 14): generating ECGs in memory, and writing PTB-XL-format trees.

1. Generation, ECGs/s: `simulate_batch` (labels, dipole loops, lead field, "realistic" noise; 12 leads
   x 5000 samples, float32) in batches of `--batch`, in 1 process and in 2 processes side by side
   (each its own batches), alternating. The 2-process pool is started and warmed before timing.
   Also where one process spends its time: draw_parameters, render, noise, twelve_leads.
2. Writing, records/s: `write_simulated_ptbxl(n)` (generation + 500 Hz and 100 Hz WFDB records +
   database + 12SL features + simulation.json) with workers=1 and workers=2, alternating. A record
   here is one ECG written twice (records500 and records100). The time for PTB-XL's 21,799 ECGs is
   an extrapolation from the rate, said as such, unless `--full` writes that many once.
3. Labels of `--n-labels` ECGs (default 2,000): mean, SD, 5th/50th/95th percentiles per target, and
   the share of first-degree AV block (PR > 200 ms) and wide QRS (>= 120 ms).

    python -m bench.simulate_speed            # 2048 ECGs per generation run, 2000-record trees
    python -m bench.simulate_speed --full     # also one full PTB-XL-size tree (21,799 records)
    python -m bench.simulate_speed --quick    # seconds, shows the script works
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench import common

SCRIPT = "simulate_speed"
PTBXL_SIZE = 21799


def generate(n: int, batch: int, seed: int) -> int:
    """`n` simulated ECGs in batches of `batch`; returns n (the arrays are dropped)."""
    from ecgtune.data.simulate import simulate_batch

    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        x, _ = simulate_batch(min(batch, n - done), rng)
        done += len(x)
    return done


def bench_generation(args) -> tuple[dict, list[dict]]:
    pool = ProcessPoolExecutor(max_workers=2)
    list(pool.map(generate, [args.batch] * 2, [args.batch] * 2, [0, 1]))  # start and warm both
    generate(args.batch, args.batch, 0)  # and this process
    half = args.n_gen // 2

    def two_processes() -> int:
        return sum(pool.map(generate, [half, args.n_gen - half], [args.batch] * 2, [2, 3]))

    sides = {"1 process": lambda: generate(args.n_gen, args.batch, 4), "2 processes": two_processes}
    common.log("generation:")
    m = common.alternate(sides, args.repeats, log=common.log)
    pool.shutdown()
    s = common.summarize_measurements(m, reference="1 process")
    rows = [
        [name, args.n_gen, common.fmt(s[name]["rate"]["median"], 0), f"{1e3 / s[name]['rate']['median']:.2f}"]
        for name in sides
    ]
    t = common.table(
        ["generator", "ECGs per run", "ECG/s", "ms per ECG"],
        rows,
        title=f"generation (12 x 5000, realistic noise, batch {args.batch}), "
        f"median of {args.repeats}{_q(args)}",
    )
    stages, ts = bench_stages(args)
    return {"n": args.n_gen, "batch": args.batch, **s, "stages": stages}, [t, ts]


def bench_stages(args) -> tuple[dict, dict]:
    """Per-stage time of one process over `n_gen` ECGs (each stage timed around its own call)."""
    from ecgtune.data.simulate import draw_parameters, render, twelve_leads
    from ecgtune.data.simulate_noise import NOISE_LEVELS, add_noise

    rng = np.random.default_rng(5)
    spent = dict.fromkeys(("draw_parameters", "render", "noise", "twelve_leads"), 0.0)
    for start in range(0, args.n_gen, args.batch):
        n = min(args.batch, args.n_gen - start)
        t0 = time.perf_counter()
        p = draw_parameters(n, rng)
        t1 = time.perf_counter()
        x = render(p)
        t2 = time.perf_counter()
        add_noise(x, NOISE_LEVELS["realistic"], rng)
        t3 = time.perf_counter()
        twelve_leads(x)
        t4 = time.perf_counter()
        for k, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[k] += dt
    per = {k: 1e3 * v / args.n_gen for k, v in spent.items()}
    rows = [[k, f"{v:.3f}"] for k, v in per.items()] + [["total", f"{sum(per.values()):.3f}"]]
    return per, common.table(["stage", "ms per ECG"], rows, title=f"where one process spends it{_q(args)}")


def bench_writing(args, tmp: Path) -> tuple[dict, dict]:
    from ecgtune.data.simulated_ptbxl import write_simulated_ptbxl

    counter = iter(range(10**6))

    def side(workers: int):
        def run() -> int:
            out = tmp / f"tree-{next(counter)}"
            write_simulated_ptbxl(out, args.n_write, seed=args.seed, workers=workers)
            _remove(out)
            return args.n_write

        return run

    common.log("writing:")
    write_simulated_ptbxl(tmp / "warm", min(args.n_write, 64), workers=2)  # imports, page cache
    _remove(tmp / "warm")
    sides = {"workers=1": side(1), "workers=2": side(2)}
    m = common.alternate(sides, args.repeats, log=common.log)
    s = common.summarize_measurements(m, reference="workers=1")
    rows = []
    for name in sides:
        rate = s[name]["rate"]["median"]
        rows.append([name, args.n_write, common.fmt(rate, 0), f"{PTBXL_SIZE / rate / 60:.1f} (extrapolated)"])
    full = None
    if args.full:
        common.log(f"writing one full tree of {PTBXL_SIZE} records (workers=2) ...")
        t0 = time.perf_counter()
        write_simulated_ptbxl(tmp / "full", PTBXL_SIZE, seed=args.seed, workers=2)
        full = time.perf_counter() - t0
        _remove(tmp / "full")
        rows.append(
            [
                "workers=2, full tree",
                PTBXL_SIZE,
                common.fmt(PTBXL_SIZE / full, 0),
                f"{full / 60:.1f} (measured)",
            ]
        )
    t = common.table(
        ["writer", "records per run", "records/s", f"minutes for {PTBXL_SIZE:,}"],
        rows,
        title=f"writing PTB-XL-format trees (500 + 100 Hz per record), median of {args.repeats}{_q(args)}",
    )
    return {"n": args.n_write, **s, "full_tree_seconds": full}, t


def bench_labels(args) -> tuple[dict, dict]:
    from ecgtune.data.simulate import draw_labels
    from ecgtune.targets import TARGET_NAMES

    labels, _, _ = draw_labels(args.n_labels, np.random.default_rng(args.seed))
    out, rows = {}, []
    for t in TARGET_NAMES:
        v = labels[t].to_numpy()
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        out[t] = {
            "mean": v.mean(),
            "sd": v.std(ddof=1),
            "p5": p5,
            "p50": p50,
            "p95": p95,
            "min": v.min(),
            "max": v.max(),
        }
        cells = (v.mean(), v.std(ddof=1), p5, p50, p95, v.min(), v.max())
        rows.append([t, *(f"{c:.1f}" if k < 2 else f"{c:.0f}" for k, c in enumerate(cells))])
    out["pr_over_200"] = float((labels["pr"] > 200).mean())
    out["qrs_120_or_more"] = float((labels["qrs"] >= 120).mean())
    out["spearman_qt_hr"] = float(labels[["qt", "hr"]].corr(method="spearman").iloc[0, 1])
    title = (
        f"labels of {args.n_labels} ECGs (seed {args.seed}): PR > 200 ms {100 * out['pr_over_200']:.1f} %, "
        f"QRS >= 120 ms {100 * out['qrs_120_or_more']:.1f} %, Spearman(QT, HR) {out['spearman_qt_hr']:.2f}"
    )
    return out, common.table(["target", "mean", "SD", "p5", "p50", "p95", "min", "max"], rows, title=title)


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _q(args) -> str:
    return " [QUICK: not a measurement]" if args.quick else ""


def main(argv: list[str] | None = None) -> None:
    p = common.make_parser(SCRIPT, __doc__)
    p.add_argument("--n-gen", type=int, default=None, help="ECGs per generation run (2048; quick 64)")
    p.add_argument("--batch", type=int, default=256, help="ECGs per simulate_batch call")
    p.add_argument("--n-write", type=int, default=None, help="records per tree written (2000; quick 24)")
    p.add_argument("--n-labels", type=int, default=2000, help="ECGs whose label distribution is shown")
    p.add_argument("--full", action="store_true", help=f"also write one tree of {PTBXL_SIZE} records")
    args = p.parse_args(argv)
    common.finish_args(args, SCRIPT, repeats_full=3, repeats_quick=1)
    args.n_gen = args.n_gen or (64 if args.quick else 2048)
    args.batch = min(args.batch, args.n_gen)
    args.n_write = args.n_write or (24 if args.quick else 2000)

    results: dict = {}
    tables = []
    results["generation"], ts = bench_generation(args)
    tables += ts
    with tempfile.TemporaryDirectory(prefix="ecgtune-bench-sim-") as td:
        results["writing"], t = bench_writing(args, Path(td))
        tables.append(t)
    results["labels"], t = bench_labels(args)
    tables.append(t)
    out = common.write_json(args.out, SCRIPT, args, results, tables)
    common.print_tables(tables, notes=[f"wrote {out}", "timings are measured on this machine, not asserted"])


if __name__ == "__main__":
    main()

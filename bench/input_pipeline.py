"""Input pipeline (benchmarks part 1): ECGs/s delivered as shuffled training batches, ecgtune vs the study.

ecgtune:     `Batches(split, cpu).epoch(batch, shuffle=True)` over the store: each batch is a sorted
             gather of rows of the int16 memory map, converted in bulk to float32 millivolts.
study-style: a torch Dataset that reads one `.asc` per ECG with pandas
             (`pd.read_csv(path, sep=" ", header=None)`), converts to float32, divides by 6000 as the
             study did (`--study-scale 1000` gives mV; same cost) and transposes, under a DataLoader
             (shuffle, the batch size, num_workers 0, 1 or 2). Worker start-up is part of each epoch,
             as in the study (persistent_workers=False).

Both sides deliver the same N ECGs (written to a temporary directory in both formats; the page cache
is warm for both) as (B, 8, 5000) float32 batches. One run of a side is one shuffled epoch; for each
(batch size, workers) the two sides alternate (A B A B ...) and the table quotes the median ratio of
the per-repeat rates, with its interquartile range. Goal: ecgtune >= 20x at every worker count.

    python -m bench.input_pipeline                 # N=2048, batch 32 and 256, workers 0 1 2, 5 repeats
    python -m bench.input_pipeline --quick         # N=256, 1 repeat: seconds, shows the script works
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench import bench_data, common, study_pipeline

SCRIPT = "input_pipeline"
GOAL = 20.0


def main(argv: list[str] | None = None) -> None:
    p = common.make_parser(SCRIPT, __doc__)
    p.add_argument("--n", type=int, default=None, help="ECGs in the data set (default 2048; quick 256)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="study-side num_workers")
    p.add_argument("--unique", type=int, default=64, help="distinct GAN ECGs the data set repeats")
    p.add_argument("--study-scale", type=float, default=6000.0, help="study divisor: 6000 (study), 1000 (mV)")
    args = p.parse_args(argv)
    common.finish_args(args, SCRIPT, repeats_full=5, repeats_quick=1)
    if args.n is None:
        args.n = 256 if args.quick else 2048
    if args.quick:
        args.unique = min(args.unique, 8)

    import torch

    from ecgtune.data.store import ECGStore
    from ecgtune.train import Batches

    results: dict = {"n": args.n, "study_scale": args.study_scale, "goal_ratio": GOAL, "pairs": []}
    with tempfile.TemporaryDirectory(prefix="ecgtune-bench-input-") as tmp:
        common.log(f"writing {args.n} ECGs ({args.unique} distinct) as a store and as .asc files ...")
        data = bench_data.write_bench_data(Path(tmp), args.n, unique=args.unique, seed=args.seed)
        split = ECGStore(data.store_path).split("train")
        batches = Batches(split, torch.device("cpu"))
        dataset = study_pipeline.study_dataset(data.asc_paths, data.targets, scale=args.study_scale)

        # Both sides deliver the same signals: study row i x scale / 1000 == ecgtune row i (mV).
        xs, _ = dataset[3]
        x_store = torch.from_numpy(np.array(split.signals[3])).float() / 1000.0
        results["same_signals"] = bool(torch.allclose(xs * (args.study_scale / 1000.0), x_store, atol=1e-5))
        results["batch_dtype_shape"] = {"ecgtune": str(next(batches.epoch(4, shuffle=True))[0].shape)}

        epoch = 0
        rows = []
        for bs in args.batch_sizes:
            for workers in args.workers:
                loader = study_pipeline.study_loader(dataset, bs, workers, seed=args.seed)

                def ecgtune_epoch(bs: int = bs) -> int:
                    nonlocal epoch
                    epoch += 1
                    n = 0
                    for x, _ in batches.epoch(bs, shuffle=True, seed=args.seed, epoch=epoch):
                        n += len(x)
                    return n

                def study_epoch(loader=loader) -> int:
                    n = 0
                    for x, _ in loader:
                        n += len(x)
                    return n

                common.log(f"batch {bs}, study workers {workers}:")
                m = common.alternate(
                    {"ecgtune": ecgtune_epoch, "study": study_epoch},
                    args.repeats,
                    warmup=not args.quick,
                    log=common.log,
                )
                s = common.summarize_measurements(m, reference="study")
                ratio = s["ecgtune"]["ratio_to_study"]
                results["pairs"].append({"batch_size": bs, "workers": workers, **s})
                rows.append(
                    [
                        bs,
                        workers,
                        common.fmt(s["ecgtune"]["rate"]["median"], 0),
                        common.fmt(s["study"]["rate"]["median"], 0),
                        common.fmt_ratio(ratio),
                        "yes" if ratio["median"] >= GOAL else "no",
                    ]
                )

    results["min_ratio"] = min(p["ecgtune"]["ratio_to_study"]["median"] for p in results["pairs"])
    results["goal_met"] = results["min_ratio"] >= GOAL
    t = common.table(
        ["batch", "study workers", "ecgtune ECG/s", "study ECG/s", "ratio (IQR)", f">= {GOAL:g}x"],
        rows,
        title=(
            f"input pipeline: shuffled training batches, N={args.n}, {args.repeats} alternating repeat(s), "
            f"medians{' [QUICK: not a measurement]' if args.quick else ''}"
        ),
    )
    out = common.write_json(args.out, SCRIPT, args, results, [t])
    common.print_tables(
        [t],
        notes=[
            f"wrote {out}",
            f"same signals both sides: {results['same_signals']}; study side divides by {args.study_scale:g}",
        ],
    )


if __name__ == "__main__":
    main()

"""Data stalls (benchmarks part 2): the share of a training step spent waiting for the next batch.

For the smallest, the median and the largest model of each shipped search space
(sweeps/resnet_widths.yaml, vit_patch_depth.yaml), trained with ecgtune's input pipeline
(`Batches.epoch` over the store) and with the study-style one (a pandas `.asc` Dataset under a
DataLoader with num_workers=2, see bench/study_pipeline.py):

    wait % = time in next(iterator) / (wait + compute),   compute = forward, L1, backward, AdamW step

Models come from the spec's search space (`ecgtune.spec.apply_params` + `ecgtune.models.build_model`,
fixed parameters from the spec): smallest = every size knob at the end of its range that gives the
smaller model (patch size: the large end), largest = the other end, median = the median of the search
distribution (geometric mean of log ranges, middle choice of categoricals); dropouts and learning rates
stay at the spec's values. See `space_models.space_params`.

The table also gives each side's time per step (wait + compute): on a machine with few cores the
study's DataLoader workers parse text on the cores the training step needs, which slows the compute
too, a cost the wait share alone does not show.

Each run of a side: a fresh iterator (its start-up, the first batch included, is reported apart), one
untimed warm-up step, then `--steps` timed steps. The sides alternate (ecgtune, study, ecgtune, ...)
over `--repeats`, on the same model and optimiser. Large models are very slow on a CPU: a model whose
step would exceed `--max-step-tflop` (3 x forward FLOPs x batch) runs at the largest batch under it,
for both sides alike (the table says which batch); on a CPU, load and compute both scale with the batch,
so the wait share hardly depends on it. The largest ResNet of resnet_widths (~800 GFLOP per ECG) is
then trained at batch 1 and still takes minutes per step on two cores.

    python -m bench.data_stalls                     # batch 32, 1 warm-up + 5 steps, 2 repeats, all sizes
    python -m bench.data_stalls --sizes smallest median
    python -m bench.data_stalls --quick             # batch 8, 2 steps, smallest models only
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import bench_data, common, space_models, study_pipeline
from ecgtune.shipped import sweep_spec_path

SCRIPT = "data_stalls"
SPACES = ("resnet_widths", "vit_patch_depth")  # shipped sweeps (sweeps/)
SIZES = ("smallest", "median", "largest")


def main(argv: list[str] | None = None) -> None:
    p = common.make_parser(SCRIPT, __doc__)
    p.add_argument("--spaces", nargs="+", choices=list(SPACES), default=list(SPACES))
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=None, help="default all; quick: smallest")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; quick 8")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 5; quick 2)")
    p.add_argument("--workers", type=int, default=2, help="study-side DataLoader num_workers")
    p.add_argument("--max-step-tflop", type=float, default=3.0, help="cap on 3 x FLOPs x batch per step")
    p.add_argument("--study-scale", type=float, default=6000.0, help="study divisor: 6000 (study), 1000 (mV)")
    args = p.parse_args(argv)
    common.finish_args(args, SCRIPT, repeats_full=2, repeats_quick=1)
    if args.sizes is None:
        args.sizes = ["smallest"] if args.quick else list(SIZES)
    if args.batch_size is None:
        args.batch_size = 8 if args.quick else 32
    if args.steps is None:
        args.steps = 2 if args.quick else 5

    import torch

    from ecgtune.data.store import ECGStore
    from ecgtune.models import build_model
    from ecgtune.train import Batches

    # Every run reads (1 + 1 + steps) batches from a fresh shuffled pass: the data set holds them all.
    n = max(64, (2 + args.steps) * args.batch_size)
    results: dict = {"n": n, "configs": []}
    rows = []
    notes = []
    with tempfile.TemporaryDirectory(prefix="ecgtune-bench-stalls-") as tmp:
        common.log(f"writing {n} ECGs as a store and as .asc files ...")
        data = bench_data.write_bench_data(Path(tmp), n, unique=8 if args.quick else 64, seed=args.seed)
        batches = Batches(ECGStore(data.store_path).split("train"), torch.device("cpu"))
        dataset = study_pipeline.study_dataset(data.asc_paths, data.targets, scale=args.study_scale)

        for space in args.spaces:
            for size in args.sizes:
                config, params = space_models.space_model_config(sweep_spec_path(space), size)
                flops = space_models.model_flops(config)
                bs = args.batch_size
                if 3 * flops * bs > args.max_step_tflop * 1e12:
                    bs = max(1, int(args.max_step_tflop * 1e12 // (3 * flops)))
                torch.manual_seed(args.seed)
                model = build_model(config)
                model.train()
                params_n = sum(p.numel() for p in model.parameters())
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                gflop = flops / 1e9
                common.log(f"{space} {size}: {params}: {params_n:,} params, {gflop:.2f} GFLOP, batch {bs}")
                epoch = 0

                def ecgtune_iter(bs: int = bs):
                    nonlocal epoch
                    epoch += 1
                    return iter(batches.epoch(bs, shuffle=True, seed=args.seed, epoch=epoch))

                def study_iter(bs: int = bs):
                    nonlocal epoch
                    epoch += 1
                    return iter(
                        study_pipeline.study_loader(dataset, bs, args.workers, seed=args.seed + epoch)
                    )

                sides = {
                    "ecgtune": lambda mi=ecgtune_iter, m=model, o=optimizer: study_pipeline.timed_steps(
                        mi, m, o, args.steps
                    ),
                    "study": lambda mi=study_iter, m=model, o=optimizer: study_pipeline.timed_steps(
                        mi, m, o, args.steps
                    ),
                }
                m = common.alternate(sides, args.repeats, log=common.log)
                s = common.summarize_measurements(m)
                per_side = {}
                for side in sides:
                    ex = [mm.extra for mm in m[side]]
                    per_side[side] = {
                        k: common.stats([e[k] for e in ex])
                        for k in ("wait_share", "wait_ms_per_step", "compute_ms_per_step", "startup_s")
                    }
                wait_ratio = common.ratios(
                    [mm.extra["wait_s"] for mm in m["study"]], [mm.extra["wait_s"] for mm in m["ecgtune"]]
                )
                results["configs"].append(
                    {
                        "space": space,
                        "size": size,
                        "search_params": params,
                        "model_config": config,
                        "parameters": params_n,
                        "flops_per_ecg": flops,
                        "batch_size": bs,
                        "steps": args.steps,
                        "study_workers": args.workers,
                        "runs": s,
                        "summary": per_side,
                        "study_wait_over_ecgtune": {"per_repeat": wait_ratio, **common.stats(wait_ratio)},
                    }
                )
                notes.append(f"{space} {size}: {params}")
                e, st = per_side["ecgtune"], per_side["study"]
                rows.append(
                    [
                        space,
                        size,
                        common.fmt(params_n),
                        common.fmt(flops / 1e9, 2),
                        bs,
                        f"{100 * e['wait_share']['median']:.2f}%",
                        f"{100 * st['wait_share']['median']:.1f}%",
                        common.fmt(e["wait_ms_per_step"]["median"] + e["compute_ms_per_step"]["median"], 0),
                        common.fmt(st["wait_ms_per_step"]["median"] + st["compute_ms_per_step"]["median"], 0),
                    ]
                )
                del model, optimizer

    t = common.table(
        [
            "space",
            "size",
            "params",
            "GFLOP/ECG",
            "batch",
            "ecgtune wait",
            "study wait",
            "ecgtune ms/step",
            "study ms/step",
        ],
        rows,
        title=(
            f"data stalls: wait % = next() / (next() + step), median of {args.repeats} alternating "
            f"repeat(s) of {args.steps} steps; study = pandas .asc + DataLoader({args.workers} workers)"
            f"{' [QUICK: not a measurement]' if args.quick else ''}"
        ),
    )
    out = common.write_json(args.out, SCRIPT, args, results, [t])
    common.print_tables([t], notes=[f"wrote {out}", *notes])


if __name__ == "__main__":
    main()

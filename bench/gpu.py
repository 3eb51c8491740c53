"""GPU benchmarks (part 7): what ecgtune's training gets out of a GPU, measured side by side.

Parts (`--parts` picks; each ends in a table, and the JSON is rewritten after each part, so a run cut
short by a time limit keeps what it finished):

  precision  per model: training ECGs/s and achieved TFLOP/s with bf16 autocast vs fp32, the split resident
             on the GPU. TFLOP/s = 3 x forward FLOPs x ECGs/s (forward + backward ~ 3 forwards; FLOPs of
             convolutions and matrix products as `ecgtune.models.flops_per_ecg` counts them). "fp32" is
             PyTorch's default: convolutions in TF32 (cuDNN), matrix products in full fp32.
  residency  per model: the whole split resident on the GPU (ecgtune's default when it fits) vs host-side
             batches (int16 rows gathered from the memory map, pinned, copied without blocking), bf16.
  settings   what two GPU settings of the Trainer buy, on the smallest and the median ResNet: AdamW's
             per-tensor kernels (foreach) instead of the fused one; a host sync after every step (what
             reading `loss.item()` each step costs). Not cuDNN autotuning: its plans are cached by shape
             whatever the flag says, so switching it off in a process that already tuned measures nothing.
  study      end-to-end vs the study-style loop: a pandas `.asc` Dataset under a DataLoader with W workers
             (the study's scripts use 20, python-scripts-resnet/Main.py; default here: the machine's cores,
             at most 20), batches copied to the GPU, fp32, AdamW, the loss read every step
             (bench/study_pipeline.py).
             ecgtune bf16 and ecgtune fp32 against it, and the study's share of step time spent waiting for
             data. Goal >= 20x for the sweep's small models.
  packing    1, 2 and 4 trials on one GPU at once, which is what Ray does with `resources.gpu: 1/N`: each
             trial a fresh Python process that imports torch and ecgtune, copies its split to the GPU,
             trains and evaluates every epoch, as a trial does. Trials/hour for N vs 1 (process start
             included). Goal >= 2.5x for 4 small trials vs 1.

Parts run in the order precision, residency, packing, study, settings (the issue's goals first).
Every comparison alternates its sides (A B A B ...) over `--repeats` (3; packing `--pack-repeats`, 2) and
quotes medians. A run is sized by time, not steps: each model is first timed for a few steps, then a run
trains about `--run-seconds` (0.5) of its bf16 side (every side of a model trains the same ECGs per
run). One untimed warm-up epoch per side absorbs cuDNN autotuning and allocator growth. Batch 32
unless `--batch-size`.

Data: ECG-like synthetic signals (`bench_data.synthetic_signals`), not the GAN's: the GPU image lacks the
`deepfake-ecg` package, the arithmetic does not depend on the values, and the `.asc` files hold numbers
of as many digits as real ones. Models: the study's presets, the smallest, median and largest model of
each shipped search space, and resnet_tiny (the `study` part leaves out the largest two: the study
loop is then compute-bound like ecgtune's, see part 3).

    python -m bench.gpu                         # all parts, ~7 min on an H100/H200 (an estimate)
    python -m bench.gpu --parts precision study --models resnet_widths:smallest
    python -m bench.gpu --quick                 # on a CPU too: shows the script works, measures nothing

On the lent device machine nothing can be installed from an index: see docs/benchmarks.md part 7 for
the wheels (pydantic) to carry and the one command to run.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench import bench_data, common, space_models, study_pipeline
from bench.gpu_packing import part_packing
from ecgtune.shipped import sweep_spec_path

SCRIPT = "gpu"
PARTS = ("precision", "residency", "packing", "study", "settings")
SPACES = ("resnet_widths", "vit_patch_depth")  # shipped sweeps (sweeps/)
MODELS_FULL = [
    "resnet_paper",
    "vit_paper",
    "resnet_widths:smallest",
    "resnet_widths:median",
    "resnet_widths:largest",
    "vit_patch_depth:smallest",
    "vit_patch_depth:median",
    "vit_patch_depth:largest",
    "resnet_tiny",
]
MODELS_QUICK = ["resnet_widths:smallest", "vit_patch_depth:smallest"]
SMALL_MODELS = frozenset({"resnet_widths:smallest", "vit_patch_depth:smallest", "resnet_tiny"})
SETTINGS_MODELS = ["resnet_widths:smallest", "resnet_widths:median"]
STUDY_SKIPS = frozenset({"resnet_widths:largest", "vit_patch_depth:largest"})


# ------------------------------------------------------------------------------------------- models


def model_config(label: str) -> dict[str, Any]:
    """A preset name, or <space>:<smallest|median|largest> of a shipped search space."""
    if ":" in label:
        space, size = label.split(":", 1)
        if space not in SPACES:
            raise SystemExit(f"unknown search space {space!r} in {label!r}; known: {list(SPACES)}")
        return space_models.space_model_config(sweep_spec_path(space), size)[0]
    return {"name": label, "num_outputs": 4}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------- ecgtune's sides


class TrainerSide:
    """A Trainer of its own (same initial weights as the model's other sides) and a fixed run size:
    `epochs` epochs of `samples` ECGs. `run()` trains one run; its time is the epochs' own seconds
    (`train_epoch` ends on the loss read-out, which waits for the GPU)."""

    def __init__(
        self, config, split, device, *, batch_size, samples, epochs, amp=True, resident=True, seed=0
    ):
        from ecgtune.models import build_model
        from ecgtune.train import TrainConfig, Trainer

        torch.manual_seed(seed)
        cfg = TrainConfig(
            epochs=10**6,
            batch_size=batch_size,
            lr=1e-4,
            schedule="constant",
            loss="l1",
            samples_per_epoch=samples,
            amp=amp,
            seed=seed,
        )
        self.trainer = Trainer(build_model(config), split, cfg, device=device, resident=resident)
        self.epochs = epochs

    def warm_up(self) -> None:
        self.trainer.train_epoch()

    def run(self) -> tuple[int, dict[str, float]]:
        n, seconds = 0, 0.0
        for _ in range(self.epochs):
            stats = self.trainer.train_epoch()
            n, seconds = n + stats.samples, seconds + stats.seconds
        return n, {"timed_seconds": seconds}


def size_runs(config, split, device, args) -> tuple[int, int, float]:
    """(samples per epoch, epochs per run, measured bf16 ECGs/s) so that a bf16 run lasts ~run_seconds."""
    bs = args.batch_size
    probe = TrainerSide(config, split, device, batch_size=bs, samples=bs * args.probe_steps, epochs=1)
    probe.warm_up()  # autotuning, allocator
    n, extra = probe.run()
    rate = n / extra["timed_seconds"]
    del probe
    want = max(bs, rate * args.run_seconds)
    samples = int(min(len(split), max(bs, math.ceil(want / bs) * bs)))
    epochs = max(1, round(want / samples))
    return samples, epochs, rate


def measure_sides(sides: dict[str, Any], args) -> dict[str, list[common.Measurement]]:
    for side in sides.values():
        if isinstance(side, TrainerSide):
            side.warm_up()
    runs = {name: (s.run if isinstance(s, TrainerSide) else s) for name, s in sides.items()}
    return common.alternate(runs, args.repeats, log=common.log)


# ------------------------------------------------------------------------------------------- parts


def part_precision(args, models, split, device, results) -> dict:
    rows = []
    for label, m in models.items():
        kw = dict(batch_size=args.batch_size, samples=m["samples"], epochs=m["epochs"], seed=args.seed)
        sides = {
            "bf16": TrainerSide(m["config"], split, device, amp=True, **kw),
            "fp32": TrainerSide(m["config"], split, device, amp=False, **kw),
        }
        s = common.summarize_measurements(measure_sides(sides, args), reference="fp32")
        tflops = {k: 3 * m["flops"] * s[k]["rate"]["median"] / 1e12 for k in sides}
        results.append({"model": label, **m["facts"], "runs": s, "tflop_per_s": tflops})
        rows.append(
            [
                label,
                common.fmt(m["facts"]["parameters"]),
                common.fmt(m["flops"] / 1e9, 2),
                common.fmt(s["fp32"]["rate"]["median"]),
                common.fmt(s["bf16"]["rate"]["median"]),
                common.fmt_ratio(s["bf16"]["ratio_to_fp32"]),
                common.fmt(tflops["fp32"], 1),
                common.fmt(tflops["bf16"], 1),
            ]
        )
        del sides
    return common.table(
        [
            "model",
            "params",
            "GFLOP/ECG",
            "fp32 ECG/s",
            "bf16 ECG/s",
            "bf16/fp32 (IQR)",
            "fp32 TFLOP/s",
            "bf16 TFLOP/s",
        ],
        rows,
        title=f"precision: training ECG/s, batch {args.batch_size}, split resident; "
        f"TFLOP/s = 3 x forward FLOPs x ECG/s; fp32 = PyTorch defaults (TF32 convolutions)" + quick_tag(args),
    )


def part_residency(args, models, split, device, results) -> dict:
    rows = []
    for label, m in models.items():
        kw = dict(batch_size=args.batch_size, samples=m["samples"], epochs=m["epochs"], seed=args.seed)
        sides = {
            "host batches": TrainerSide(m["config"], split, device, resident=False, **kw),
            "resident": TrainerSide(m["config"], split, device, resident=True, **kw),
        }
        s = common.summarize_measurements(measure_sides(sides, args), reference="host batches")
        results.append({"model": label, **m["facts"], "runs": s})
        rows.append(
            [
                label,
                common.fmt(s["host batches"]["rate"]["median"]),
                common.fmt(s["resident"]["rate"]["median"]),
                common.fmt_ratio(s["resident"]["ratio_to_host batches"]),
            ]
        )
        del sides
    return common.table(
        ["model", "host-batch ECG/s", "resident ECG/s", "resident/host (IQR)"],
        rows,
        title=f"residency: the split on the GPU vs host-side pinned batches, bf16, batch {args.batch_size}"
        + quick_tag(args),
    )


def part_settings(args, models, split, device, results) -> dict:
    rows = []
    for label in [m for m in SETTINGS_MODELS if m in models] or list(models)[:1]:
        m = models[label]
        kw = dict(batch_size=args.batch_size, samples=m["samples"], epochs=m["epochs"], seed=args.seed)
        sides = {name: TrainerSide(m["config"], split, device, **kw) for name in SETTINGS_SIDES}
        for name, side in sides.items():
            SETTINGS_SIDES[name](side, device)
        s = common.summarize_measurements(measure_sides(sides, args))
        for name in sides:
            if name != "ecgtune":
                r = common.ratios(s["ecgtune"]["rates"], s[name]["rates"])
                s["ecgtune"][f"ratio_to_{name}"] = {"per_repeat": r, **common.stats(r)}
        results.append({"model": label, **m["facts"], "runs": s})
        for name in sides:
            if name != "ecgtune":
                rows.append(
                    [
                        label,
                        name,
                        common.fmt(s[name]["rate"]["median"]),
                        common.fmt(s["ecgtune"]["rate"]["median"]),
                        common.fmt_ratio(s["ecgtune"][f"ratio_to_{name}"]),
                    ]
                )
        del sides
    return common.table(
        ["model", "variant", "variant ECG/s", "ecgtune ECG/s", "ecgtune/variant (IQR)"],
        rows,
        title=f"settings: what a GPU setting buys: ecgtune's Trainer (bf16, resident) vs a variant "
        f"with one setting undone, batch {args.batch_size}" + quick_tag(args),
    )


def _foreach_adamw(side: TrainerSide, device) -> None:
    t = side.trainer
    t.optimizer = torch.optim.AdamW(
        t.model.parameters(), lr=t.config.lr, weight_decay=t.config.weight_decay, foreach=True, fused=False
    )
    t.scheduler = torch.optim.lr_scheduler.LambdaLR(t.optimizer, lambda step: 1.0)


def _sync_each_step(side: TrainerSide, device) -> None:
    # Where `total += loss.item()` used to wait: after the optimiser step.
    side.trainer.optimizer.register_step_post_hook(lambda *_: sync(device))


SETTINGS_SIDES = {
    "ecgtune": lambda side, device: None,
    "foreach AdamW, not fused": _foreach_adamw,
    "host sync every step": _sync_each_step,
}


def part_study(args, models, split, data, device, results) -> dict:
    from ecgtune.models import build_model

    dataset = study_pipeline.study_dataset(data.asc_paths, data.targets, scale=1000.0)
    rows = []
    for label, m in models.items():
        if label in STUDY_SKIPS and not args.quick:
            continue
        kw = dict(batch_size=args.batch_size, samples=m["samples"], epochs=m["epochs"], seed=args.seed)
        sides: dict[str, Any] = {
            "ecgtune bf16": TrainerSide(m["config"], split, device, amp=True, **kw),
            "ecgtune fp32": TrainerSide(m["config"], split, device, amp=False, **kw),
        }
        torch.manual_seed(args.seed)
        study_model = build_model(m["config"]).to(device)
        study_opt = torch.optim.AdamW(study_model.parameters(), lr=1e-4)
        for workers in args.workers:
            sides[f"study {workers}w"] = study_side(dataset, study_model, study_opt, workers, device, args)
        for side in sides.values():
            if not isinstance(side, TrainerSide):
                side(warm=True)
        s = common.summarize_measurements(measure_sides(sides, args))
        for workers in args.workers:
            name = f"study {workers}w"
            ratio = {
                k: common.ratios(s[k]["rates"], s[name]["rates"]) for k in ("ecgtune bf16", "ecgtune fp32")
            }
            s[name]["ecgtune_over_study"] = {
                k: {"per_repeat": r, **common.stats(r)} for k, r in ratio.items()
            }
            wait = common.stats([e["wait_share"] for e in s[name]["extra"]])
            bf16 = s[name]["ecgtune_over_study"]["ecgtune bf16"]
            rows.append(
                [
                    label,
                    workers,
                    common.fmt(s["ecgtune bf16"]["rate"]["median"]),
                    common.fmt(s["ecgtune fp32"]["rate"]["median"]),
                    common.fmt(s[name]["rate"]["median"]),
                    f"{100 * wait['median']:.0f}%",
                    common.fmt_ratio(bf16),
                    common.fmt_ratio(s[name]["ecgtune_over_study"]["ecgtune fp32"]),
                    ("yes" if bf16["median"] >= 20 else "no") if label in SMALL_MODELS else "-",
                ]
            )
        results.append({"model": label, **m["facts"], "runs": s})
        del sides, study_model, study_opt
    return common.table(
        [
            "model",
            "study workers",
            "ecgtune bf16 ECG/s",
            "ecgtune fp32 ECG/s",
            "study ECG/s",
            "study wait",
            "bf16/study (IQR)",
            "fp32/study (IQR)",
            ">= 20x (small)",
        ],
        rows,
        title=f"end-to-end vs the study-style loop (pandas .asc + DataLoader, fp32, loss read each step), "
        f"batch {args.batch_size}" + quick_tag(args),
    )


def study_side(dataset, model, optimizer, workers: int, device, args):
    """The study's loop on the GPU: a fresh shuffled DataLoader pass per run, its first batch and step
    untimed (worker start-up), then `--study-steps` steps, each copying its batch to the GPU and reading
    the loss (the study summed `loss.item()`); the time spent in next() is the wait."""
    passes = 0

    def run(warm: bool = False) -> tuple[int, dict[str, float]]:
        nonlocal passes
        passes += 1

        def make_iter():
            return iter(
                study_pipeline.study_loader(dataset, args.batch_size, workers, seed=args.seed + passes)
            )

        n, t = study_pipeline.timed_steps(
            make_iter, model, optimizer, 1 if warm else args.study_steps, device
        )
        return n, {"timed_seconds": t["wait_s"] + t["compute_s"], "wait_share": t["wait_share"]}

    return run


# --------------------------------------------------------------------------------------------- main


def quick_tag(args) -> str:
    return " [QUICK: not a measurement]" if args.quick else ""


def prepare_model(label: str, split, device, args) -> dict[str, Any]:
    """A model's config, FLOPs and parameters, and its run size (`size_runs`)."""
    from ecgtune.models import build_model, count_parameters

    config = model_config(label)
    flops = space_models.model_flops(config)
    with torch.device("meta"):
        params = count_parameters(build_model(config))
    m = {
        "config": config,
        "flops": flops,
        "facts": {"parameters": params, "flops_per_ecg": flops, "model_config": config},
    }
    m["samples"], m["epochs"], m["rate"] = size_runs(config, split, device, args)
    m["facts"]["run"] = {
        "samples_per_epoch": m["samples"],
        "epochs": m["epochs"],
        "probe_bf16_ecg_per_s": m["rate"],
    }
    common.log(
        f"{label}: {params:,} params, {flops / 1e9:.2f} GFLOP/ECG, ~{m['rate']:.0f} ECG/s bf16 -> "
        f"runs of {m['epochs']} x {m['samples']} ECGs"
    )
    return m


def gpu_info() -> dict[str, Any] | None:
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    try:
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        smi = None
    return {
        "name": props.name,
        "memory_gib": props.total_memory / 2**30,
        "multiprocessors": props.multi_processor_count,
        "capability": f"{props.major}.{props.minor}",
        "nvidia_smi": smi,
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = common.make_parser(SCRIPT, __doc__)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--models", nargs="+", default=None, help="presets or <space>:<smallest|median|largest>")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; quick 8")
    p.add_argument("--run-seconds", type=float, default=None, help="bf16 seconds per timed run (default 0.5)")
    p.add_argument("--probe-steps", type=int, default=None, help="steps timed to size the runs (default 10)")
    p.add_argument("--study-steps", type=int, default=None, help="timed study steps per run (default 20)")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=None,
        help="study DataLoader workers (default: cores, <= 20)",
    )
    p.add_argument("--pack-model", default="resnet_widths:smallest")
    p.add_argument("--pack-trials", type=int, nargs="+", default=None, help="trials at once (default 1 2 4)")
    p.add_argument("--pack-seconds", type=float, default=None, help="one trial's training alone (default 8)")
    p.add_argument("--pack-repeats", type=int, default=None, help="repeats of the packing part (default 2)")
    p.add_argument(
        "--pack-threads", type=int, default=2, help="torch threads per packed trial (resources.cpu)"
    )
    p.add_argument("--store-ecgs", type=int, default=None, help="ECGs in the store (default 4096)")
    args = p.parse_args(argv)
    common.finish_args(args, SCRIPT, repeats_full=3, repeats_quick=1)
    q = args.quick
    args.models = args.models or (MODELS_QUICK if q else MODELS_FULL)
    args.batch_size = args.batch_size or (8 if q else 32)
    args.run_seconds = args.run_seconds or (0.05 if q else 0.5)
    args.probe_steps = args.probe_steps or (2 if q else 10)
    args.study_steps = args.study_steps or (2 if q else 20)
    args.workers = args.workers or ([0] if q else [min(20, os.cpu_count() or 1)])
    args.pack_trials = args.pack_trials or ([1, 2] if q else [1, 2, 4])
    args.pack_seconds = args.pack_seconds or (0.2 if q else 8.0)
    args.pack_repeats = args.pack_repeats or (1 if q else 2)
    args.store_ecgs = args.store_ecgs or (64 if q else 4096)

    if not torch.cuda.is_available() and not q:
        raise SystemExit(
            "bench.gpu measures a GPU and this machine has no CUDA device; --quick runs it on the CPU"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = gpu_info()
    common.log(f"device: {info or 'cpu'}")
    results: dict[str, Any] = {"gpu": info, "device": str(device), "models": {}}
    tables: list[dict] = []

    def checkpoint(part: str, t: dict) -> None:
        tables.append(t)
        out = common.write_json(args.out, SCRIPT, args, results, tables)
        common.print_tables([t], notes=[f"[{part} done; wrote {out}]"])

    from ecgtune.data.store import ECGStore

    with tempfile.TemporaryDirectory(prefix="ecgtune-bench-gpu-") as tmp:
        n_asc = (1 + args.study_steps) * args.batch_size + args.batch_size
        common.log(f"writing {args.store_ecgs} synthetic ECGs as a store, {n_asc} as .asc files ...")
        data = bench_data.write_bench_data(
            Path(tmp) / "asc", n_asc, unique=64, seed=args.seed, source="synthetic"
        )
        store = bench_data.write_bench_data(
            Path(tmp) / "store", args.store_ecgs, unique=256, seed=args.seed, source="synthetic", asc=False
        )
        split = ECGStore(store.store_path).split("train")
        needs_models = [part for part in args.parts if part != "packing"]
        models = {}
        labels = list(args.models) if needs_models else []
        if "packing" in args.parts and args.pack_model not in labels:
            labels.append(args.pack_model)
        for label in labels:
            models[label] = prepare_model(label, split, device, args)
            results["models"][label] = models[label]["facts"]
        main_models = {k: v for k, v in models.items() if k in args.models}
        for part in args.parts:
            results[part] = []
            if part == "precision":
                checkpoint(part, part_precision(args, main_models, split, device, results[part]))
            elif part == "residency":
                checkpoint(part, part_residency(args, main_models, split, device, results[part]))
            elif part == "settings":
                checkpoint(part, part_settings(args, main_models, split, device, results[part]))
            elif part == "study":
                checkpoint(part, part_study(args, main_models, split, data, device, results[part]))
            elif part == "packing":
                checkpoint(part, part_packing(args, models, store, device, results[part], quick_tag(args)))
    out = common.write_json(args.out, SCRIPT, args, results, tables)
    common.print_tables(tables, notes=[f"wrote {out}", f"device: {info['name'] if info else 'cpu'}"])


if __name__ == "__main__":
    main()

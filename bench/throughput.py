"""End-to-end training throughput (benchmarks part 3, issue 3's report): ECGs/s including data.

Part A, the loops. The same model, batch size 32, AdamW, L1, trained by
  ecgtune:     `Trainer.train_epoch()` limited by `samples_per_epoch` (shuffled `Batches` over the store;
               clipping and schedule off, so both sides do the same arithmetic), and
  study-style: a loop over a DataLoader (pandas `.asc` Dataset, `--workers` processes, see
               bench/study_pipeline.py) with forward, L1, backward and AdamW step on the same model.
Models: the study's two presets (resnet_paper, vit_paper), the smallest and the median model of each
shipped search space (see bench/space_models.py `space_params`), and resnet_tiny. Each study run starts a
fresh DataLoader pass and leaves its first batch and step out of the timing (worker start-up and
pipeline fill, amortised over a real epoch); the prefetch queue may then already hold a batch or two,
a head start for the study of at most ~1/steps. The pass is shut down before the ecgtune side runs, so
no worker competes with it. Runs alternate ecgtune, study, ecgtune, ... after one untimed warm-up step
each. A run is `--steps` timed steps (10), fewer for models whose run would exceed `--max-run-tflop`
(3 x forward FLOPs x batch x steps; 2 TFLOP), but at least `--min-steps` (2): resnet_paper, vit_paper
and the median ResNet of resnet_widths (~13 GFLOP per ECG) run 2 steps, tens of seconds each on two
cores, where the data's share of the time is small anyway.

Part B, what ecgtune's own model code gains at equal mathematics: forward + backward ECGs/s of
`StudyKanResWideX2`, a faithful minimal re-implementation of the study's ResNet (see its docstring),
vs ecgtune's `resnet_paper` with the same weights copied in, alternating. ecgtune uses one
negative_slope in every activation; the study's training code has LeakyReLU(0.1) in the stem and ReLU
in the residual modules, so here ecgtune's module activations get slope 0 (= ReLU, same cost) and the
outputs are compared (max |difference|) to show the mathematics is the same. For scale, a third side
runs resnet_paper with an odd kernel, 49 (what the sweep offers): different mathematics, no padded copy.

    python -m bench.throughput                          # all models, batch 32, part B at batch 8
    python -m bench.throughput --models resnet_tiny resnet_widths:smallest
    python -m bench.throughput --quick                  # small models, batch 8, part B on 500 samples
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench import bench_data, common, space_models, study_pipeline
from ecgtune.shipped import sweep_spec_path

SCRIPT = "throughput"
SPACES = ("resnet_widths", "vit_patch_depth")  # shipped sweeps (sweeps/)
MODELS_FULL = [
    "resnet_paper",
    "vit_paper",
    "resnet_widths:smallest",
    "resnet_widths:median",
    "vit_patch_depth:smallest",
    "vit_patch_depth:median",
    "resnet_tiny",
]
MODELS_QUICK = ["resnet_tiny", "resnet_widths:smallest", "vit_patch_depth:smallest"]


# --------------------------------------------------------------------- the study's ResNet, as written


class StudyKanResInit(nn.Module):
    """KanResInit: conv(k1, no padding) BN LeakyReLU(0.1), conv(k2, no padding) BN LeakyReLU(0.1)."""

    def __init__(self, in_channels, filterno_1, filterno_2, filtersize_1, filtersize_2, stride):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, filterno_1, filtersize_1, stride=stride)
        self.bn1 = nn.BatchNorm1d(filterno_1)
        self.conv2 = nn.Conv1d(filterno_1, filterno_2, filtersize_2)
        self.bn2 = nn.BatchNorm1d(filterno_2)
        self.relu1 = nn.LeakyReLU(0.1)
        self.relu2 = nn.LeakyReLU(0.1)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(x)))


class StudyKanResModule(nn.Module):
    """KanResModule: conv(padding='same') BN ReLU, conv(padding='same') BN ReLU, + input.

    The study computes `padding = (filtersize_1 - 1) // 2 + (stride - 1)` and then does not use it:
    both convs pass padding='same'. With its even kernel (50) PyTorch pads 49 zeros, 24 left and 25
    right, by building a zero-padded copy of the input before the conv (and warns once).
    """

    def __init__(self, in_channels, filterno_1, filterno_2, filtersize_1, filtersize_2, stride):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, filterno_1, filtersize_1, stride=stride, padding="same")
        self.bn1 = nn.BatchNorm1d(filterno_1)
        self.conv2 = nn.Conv1d(filterno_1, filterno_2, filtersize_2, padding="same")
        self.bn2 = nn.BatchNorm1d(filterno_2)
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = x
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return x + identity


class StudyKanResWideX2(nn.Module):
    """The study's ResNet as its training scripts define it, re-implemented minimally.

    Read from cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-accelerators,
    python-scripts-resnet/KanResWide_X2.py (commit 880d8f90), KanResInit.py, KanResModule.py:
    KanResInit(8, 64, 32, 8, 3, 1) -> AvgPool1d(2) -> 8 x KanResModule(32, 64, 32, 50, 50, 1) ->
    AdaptiveAvgPool1d(1) -> view -> Linear(32, output_size) -> torch.squeeze. Same module names and
    order; 1,651,364 parameters with 4 outputs.
    """

    def __init__(self, input_shape=(8, 5000), output_size=4):
        super().__init__()
        self.input_shape = input_shape
        self.output_size = output_size
        self.init_block = StudyKanResInit(input_shape[0], 64, 32, 8, 3, 1)
        self.pool = nn.AvgPool1d(kernel_size=2)
        self.module_blocks = nn.Sequential(*[StudyKanResModule(32, 64, 32, 50, 50, 1) for _ in range(8)])
        self.global_avg_pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(32, output_size)

    def forward(self, x):
        x = self.init_block(x)
        x = self.pool(x)
        x = self.module_blocks(x)
        x = self.global_avg_pool(x)
        x = x.view(x.size(0), -1)
        x = self.fc(x)
        return torch.squeeze(x)  # the study's squeeze: (B, 4) stays (B, 4) for B > 1


def ecgtune_study_twin() -> nn.Module:
    """ecgtune's resnet_paper with ReLU (slope 0) in the residual modules, as the study's training code."""
    from ecgtune.models import create_model

    model = create_model("resnet_paper")
    for module in model.blocks.modules():
        if isinstance(module, nn.LeakyReLU):
            module.negative_slope = 0.0
    return model


def copy_study_weights(study: StudyKanResWideX2, ours: nn.Module) -> int:
    """Load the study model's parameters and buffers into ecgtune's resnet_paper; return tensors copied."""
    src = study.state_dict()
    names = {
        "init_block.conv1": "stem.0.0",
        "init_block.bn1": "stem.0.1",
        "init_block.conv2": "stem.1.0",
        "init_block.bn2": "stem.1.1",
        "fc": "head",
    }
    for i in range(8):
        for j, (conv, bn) in enumerate([("conv1", "bn1"), ("conv2", "bn2")]):
            names[f"module_blocks.{i}.{conv}"] = f"blocks.{i}.convs.{j}.0"
            names[f"module_blocks.{i}.{bn}"] = f"blocks.{i}.convs.{j}.1"
    mapped = {}
    for key, value in src.items():
        prefix, leaf = key.rsplit(".", 1)
        mapped[f"{names[prefix]}.{leaf}"] = value
    ours.load_state_dict(mapped, strict=True)  # every tensor present, every shape equal
    return len(mapped)


def part_b(args) -> tuple[dict, dict]:
    """Equal mathematics: the study's ResNet code vs ecgtune's, forward + backward, alternating."""
    from ecgtune.models import count_parameters, create_model

    torch.manual_seed(args.seed)
    study = StudyKanResWideX2((8, 5000), 4)
    ours = ecgtune_study_twin()
    copied = copy_study_weights(study, ours)
    odd = create_model("resnet_paper", block_kernel=49)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.model_batch, 8, args.model_length, generator=g)
    y = torch.randn(args.model_batch, 4, generator=g)

    # Equal mathematics: same outputs in eval mode (running statistics) and in train mode (batch statistics).
    diffs = {}
    for mode in ("eval", "train"):
        study.train(mode == "train")
        ours.train(mode == "train")
        with torch.no_grad():
            s = study(x[:2]) if args.model_batch >= 2 else study(x)
            o = ours(x[:2]) if args.model_batch >= 2 else ours(x)
        diffs[mode] = float((s.reshape(o.shape) - o).abs().max())
    # Train-mode forwards moved the BN running statistics of both alike; training below uses train mode.
    for m in (study, ours, odd):
        m.train()

    def fwd_bwd(model):
        def run() -> int:
            model.zero_grad(set_to_none=True)
            pred = model(x).reshape(len(x), -1)
            (pred - y).abs().mean().backward()
            return len(x)

        return run

    sides = {"study code": fwd_bwd(study), "ecgtune": fwd_bwd(ours), "ecgtune k=49": fwd_bwd(odd)}
    common.log(f"part B: forward+backward, batch {args.model_batch}, {args.model_length} samples")
    m = common.alternate(sides, args.repeats, warmup=True, log=common.log)
    s = common.summarize_measurements(m, reference="study code")
    results = {
        "batch_size": args.model_batch,
        "signal_length": args.model_length,
        "parameters": {
            "study code": count_parameters(study),
            "ecgtune": count_parameters(ours),
            "ecgtune k=49": count_parameters(odd),
        },
        "tensors_copied": copied,
        "max_abs_output_difference": diffs,
        "runs": s,
        "source": "cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-accelerators "
        "python-scripts-resnet/KanResWide_X2.py@880d8f90, KanResInit.py, KanResModule.py",
    }
    rows = []
    for name in sides:
        ratio = s[name].get("ratio_to_study code")
        rows.append(
            [
                name,
                common.fmt(results["parameters"][name]),
                "same weights" if name == "ecgtune" else ("-" if name == "study code" else "own weights"),
                common.fmt(s[name]["rate"]["median"], 2),
                common.fmt_ratio(ratio) if ratio else "1.00x",
            ]
        )
    t = common.table(
        ["ResNet code", "params", "weights", "fwd+bwd ECG/s", "vs study code (IQR)"],
        rows,
        title=(
            f"equal mathematics: study's KanResWide_X2 vs ecgtune resnet_paper, batch {args.model_batch}, "
            f"{args.model_length} samples; max |out diff| eval {diffs['eval']:.1e}, "
            f"train {diffs['train']:.1e}"
            f"{' [QUICK: not a measurement]' if args.quick else ''}"
        ),
    )
    return results, t


# ------------------------------------------------------------------------------------------- part A


def model_config(label: str) -> tuple[dict, dict | None]:
    if ":" in label:
        space, size = label.split(":", 1)
        if space not in SPACES:
            raise SystemExit(f"unknown search space {space!r} in {label!r}; known: {list(SPACES)}")
        return space_models.space_model_config(sweep_spec_path(space), size)
    return {"name": label, "num_outputs": 4}, None


def steps_for(args, flops: int) -> int:
    """Timed steps per run: `--steps`, fewer for models whose run would exceed `--max-run-tflop`
    (3 x forward FLOPs x batch x steps), but at least `--min-steps`."""
    step_flops = 3 * flops * args.batch_size
    return max(args.min_steps, min(args.steps, int(args.max_run_tflop * 1e12 // step_flops)))


def measure_loops(args, label: str, split, dataset) -> dict:
    """ecgtune's Trainer vs the study-style loop on one model, alternating."""
    from ecgtune.models import build_model
    from ecgtune.train import TrainConfig, Trainer

    config, params = model_config(label)
    bs = args.batch_size
    flops = space_models.model_flops(config)
    steps = steps_for(args, flops)
    torch.manual_seed(args.seed)
    model = build_model(config)
    cfg = TrainConfig(
        epochs=10**6,
        batch_size=bs,
        lr=1e-4,
        schedule="constant",
        grad_clip=None,
        loss="l1",
        samples_per_epoch=steps * bs,
        amp=False,
        seed=args.seed,
    )
    trainer = Trainer(model, split, cfg, device="cpu")
    runs = 0

    def study_run(k: int) -> tuple[int, dict]:
        """A fresh DataLoader pass (as every study epoch starts one); its first batch and step are
        untimed, then k timed steps. The prefetch queue may already hold the next batch or two
        when the timing starts: a head start of at most ~1/k for the study."""
        nonlocal runs
        runs += 1
        loader = study_pipeline.study_loader(dataset, bs, args.workers, seed=args.seed + runs)
        t0 = time.perf_counter()
        it = iter(loader)
        x, y = next(it)
        first = time.perf_counter() - t0
        study_pipeline.train_step(trainer.model, trainer.optimizer, x, y)
        t0 = time.perf_counter()
        n = 0
        for _ in range(k):
            x, y = next(it)
            study_pipeline.train_step(trainer.model, trainer.optimizer, x, y)
            n += len(x)
        timed = time.perf_counter() - t0
        del it  # workers stop: nothing runs in the background while the other side is timed
        return n, {"timed_seconds": timed, "first_batch_s": first}

    def ecgtune_run() -> int:
        return trainer.train_epoch().samples

    common.log(f"part A {label}: {config} ({flops / 1e9:.2f} GFLOP/ECG), {steps} steps of {bs} per run")
    # Warm-up: one untimed step each.
    x, y = next(trainer.train_batches.epoch(bs, shuffle=True, seed=args.seed, epoch=10**6))
    study_pipeline.train_step(trainer.model, trainer.optimizer, x, y)
    study_run(0)
    m = common.alternate(
        {"ecgtune": ecgtune_run, "study": lambda: study_run(steps)}, args.repeats, log=common.log
    )
    return {
        "model": label,
        "search_params": params,
        "model_config": config,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "flops_per_ecg": flops,
        "batch_size": bs,
        "steps_per_run": steps,
        "step_tflop": 3 * flops * bs / 1e12,
        "study_workers": args.workers,
        **common.summarize_measurements(m, reference="study"),
    }


def part_a(args, data) -> tuple[list, dict]:
    from ecgtune.data.store import ECGStore

    split = ECGStore(data.store_path).split("train")
    dataset = study_pipeline.study_dataset(data.asc_paths, data.targets, scale=args.study_scale)
    results, rows = [], []
    for label in args.models:
        r = measure_loops(args, label, split, dataset)
        results.append(r)
        rows.append(
            [
                label,
                common.fmt(r["parameters"]),
                common.fmt(r["flops_per_ecg"] / 1e9, 2),
                r["steps_per_run"],
                common.fmt(r["ecgtune"]["rate"]["median"], 1),
                common.fmt(r["study"]["rate"]["median"], 1),
                common.fmt_ratio(r["ecgtune"]["ratio_to_study"]),
            ]
        )
    t = common.table(
        ["model", "params", "GFLOP/ECG", "steps/run", "ecgtune ECG/s", "study ECG/s", "ratio (IQR)"],
        rows,
        title=(
            f"end-to-end training ECG/s incl. data, batch {args.batch_size}, AdamW, L1; study = pandas "
            f".asc + DataLoader({args.workers} workers); median of {args.repeats} alternating repeat(s)"
            f"{' [QUICK: not a measurement]' if args.quick else ''}"
        ),
    )
    return results, t


def main(argv: list[str] | None = None) -> None:
    p = common.make_parser(SCRIPT, __doc__)
    p.add_argument("--models", nargs="+", default=None, help="presets or <space>:<smallest|median|largest>")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; quick 8")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 10; quick 2)")
    p.add_argument("--min-steps", type=int, default=2, help="timed steps per run of the largest models")
    p.add_argument(
        "--max-run-tflop", type=float, default=2.0, help="fewer steps for models above this per run"
    )
    p.add_argument("--workers", type=int, default=2, help="study-side DataLoader num_workers")
    p.add_argument("--study-scale", type=float, default=6000.0, help="study divisor: 6000 (study), 1000 (mV)")
    p.add_argument("--model-batch", type=int, default=None, help="part B batch (default 8; quick 2)")
    p.add_argument("--model-length", type=int, default=None, help="part B samples (default 5000; quick 500)")
    p.add_argument("--skip-part-b", action="store_true")
    args = p.parse_args(argv)
    common.finish_args(args, SCRIPT, repeats_full=3, repeats_quick=1)
    quick = args.quick
    args.models = args.models or (MODELS_QUICK if quick else MODELS_FULL)
    args.batch_size = args.batch_size or (8 if quick else 32)
    args.steps = args.steps or (2 if quick else 10)
    args.model_batch = args.model_batch or (2 if quick else 8)
    args.model_length = args.model_length or (500 if quick else 5000)

    # Every study run reads 1 + steps batches of a fresh shuffled pass.
    n = max(64, (1 + max(args.steps, args.min_steps)) * args.batch_size)
    results: dict = {"n": n}
    tables = []
    with tempfile.TemporaryDirectory(prefix="ecgtune-bench-throughput-") as tmp:
        common.log(f"writing {n} ECGs as a store and as .asc files ...")
        data = bench_data.write_bench_data(Path(tmp), n, unique=8 if quick else 64, seed=args.seed)
        results["loops"], t = part_a(args, data)
        tables.append(t)
    if not args.skip_part_b:
        results["equal_mathematics"], t = part_b(args)
        tables.append(t)
    out = common.write_json(args.out, SCRIPT, args, results, tables)
    common.print_tables(tables, notes=[f"wrote {out}"])


if __name__ == "__main__":
    main()

"""What an epoch of each architecture of the curve table costs, timed on idle cores (docs/benchmarks.md
part 4). The table's own seconds were recorded while its build shared the machine's 2 cores with other
work, so they are not a model's cost; these are.

For every distinct architecture of the table's design (its model.* keys), one thread, the machine
otherwise idle (the command refuses to start above a 1-minute load average of 0.5 and records the load
before and after): seconds per training ECG (forward, backward, AdamW step, batch 16, as the table
trains) and per evaluated ECG (inference, batch 128), each the median of 5 repeats of 64 and 256 ECGs
after a warm-up. `bench.cost_model` fits them against the architecture's FLOPs.

    python -m bench.epoch_timing            # ~5 min on an idle core -> bench/data/epoch_timing.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from bench.curve_table import backbone_keys, design, load_space_spec

OUT = Path(__file__).resolve().parent / "data" / "epoch_timing.json"
TRAIN_BATCH, EVAL_BATCH = 16, 128
TRAIN_ECGS, EVAL_ECGS, REPEATS = 64, 256, 5


def architectures() -> list[dict]:
    """The distinct model.* settings of the table's design, in design order."""
    space = load_space_spec().search.space
    seen, out = set(), []
    for job in design(space):
        arch = {
            k: v for k, v in job[0].config.items() if k.startswith("model.") and k in backbone_keys(space)
        }
        arch.pop("model.dropout", None)  # dropout costs nothing measurable
        key = json.dumps(arch, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(arch)
    return out


def time_architecture(arch: dict) -> dict:
    import torch

    from ecgtune.models import build_model, flops_per_ecg
    from ecgtune.spec import apply_params

    spec = apply_params(load_space_spec(), arch)
    model = build_model(spec.network_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(TRAIN_BATCH, 8, 5000), torch.randn(TRAIN_BATCH, 4)
    xe = torch.randn(EVAL_BATCH, 8, 5000)

    def train() -> None:
        model.train()
        for _ in range(TRAIN_ECGS // TRAIN_BATCH):
            loss = (model(x) - y).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def evaluate() -> None:
        model.eval()
        with torch.inference_mode():
            for _ in range(EVAL_ECGS // EVAL_BATCH):
                model(xe)

    train(), evaluate()  # warm-up
    t_train, t_eval = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        train()
        t_train.append((time.perf_counter() - t0) / TRAIN_ECGS)
        t0 = time.perf_counter()
        evaluate()
        t_eval.append((time.perf_counter() - t0) / EVAL_ECGS)
    return {
        "arch": arch,
        "flops_per_ecg": flops_per_ecg(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_s_per_ecg": statistics.median(t_train),
        "eval_s_per_ecg": statistics.median(t_eval),
        "train_spread": (min(t_train), max(t_train)),
    }


def time_loads() -> list[tuple[int, float]]:
    """(entry bytes, seconds) for reading a stored backbone (BackboneStore.get) of a small, a median and
    the largest table architecture from a local store: the cost a reusing trial pays instead of
    pretraining. Median of 5 reads each."""
    import tempfile

    from ecgtune.backbones import Backbone, BackboneStore, backbone_key
    from ecgtune.models import build_model
    from ecgtune.spec import apply_params

    archs = architectures()
    sizes = []
    with tempfile.TemporaryDirectory() as d:
        store = BackboneStore(d)
        for arch in (
            archs[0],
            archs[len(archs) // 2],
            max(archs, key=lambda a: a["model.block_widths.0"] * a["model.num_blocks"]),
        ):
            model = build_model(apply_params(load_space_spec(), arch).network_config())
            material = {"arch": arch}
            key = backbone_key(material)
            store.put(Backbone(key, material, model.state_dict(), [{"epoch": 1}], None))
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                store.get(key, material)
                times.append(time.perf_counter() - t0)
            entry = next(e for e in store.entries() if e.key == key)
            sizes.append((entry.bytes, statistics.median(times)))
    return sizes


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.epoch_timing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--max-load", type=float, default=0.5, help="refuse to start above this 1-min load")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    if load_before[0] > args.max_load:
        raise SystemExit(f"load average {load_before[0]:.2f} > {args.max_load}: the cores are not idle")
    rows = []
    archs = architectures()
    for i, arch in enumerate(archs):
        rows.append(time_architecture(arch))
        r = rows[-1]
        train, evaluate = 1e3 * r["train_s_per_ecg"], 1e3 * r["eval_s_per_ecg"]
        mflop = r["flops_per_ecg"] / 1e6
        print(f"{i + 1}/{len(archs)} {mflop:7.1f} MFLOP: train {train:.2f}, eval {evaluate:.2f} ms/ECG")
    loads = time_loads()
    import numpy as np

    per_byte, intercept = np.polyfit([b for b, _ in loads], [t for _, t in loads], 1)
    result = {
        "load_fit": [float(intercept), float(per_byte)],
        "loads": loads,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": 1,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        },
        "batch": {"train": TRAIN_BATCH, "eval": EVAL_BATCH},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} ({len(rows)} architectures); load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

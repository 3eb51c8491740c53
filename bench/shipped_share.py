"""Pretraining's share of each shipped GPU sweep's compute, before and after backbone sharing, from the
sweep's spec and measured epoch times (docs/benchmarks.md part 4).

For `resnet_widths` and `vit_patch_depth`: the seconds per training ECG (forward, backward, AdamW, batch
16) and per evaluated ECG (inference, batch 128) of a network in the middle of the sweep's space, one
thread on an idle CPU core (no GPU was lent: on a GPU both are smaller, their ratio what matters here);
then, with the spec's ECG counts and ASHA's rungs (bench/cost_model.py):

    pretraining P = epochs x (ECGs per epoch x train + ECGs evaluated per epoch x eval)
    fine-tuning F = epochs x (PTB-XL folds 1-8 x train + ECGs evaluated per epoch x eval)
    before: P / (P + f F)             f: the fine-tuning an average ASHA trial trains (5.1 of 30 epochs)
    after:  (P / k) / (P / k + f F)   k: trials per pretrained backbone, measured in the replays

    python -m bench.shipped_share --trials-per-backbone 2.1      # k from the replays' tpe_asha+share runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.cost_model import asha_mean_epochs, shipped_scale

OUT = Path(__file__).resolve().parents[1] / "bench" / "data" / "shipped_share.json"  # committed
# A network in the middle of each space (the searched values' geometric middle, rounded to a choice).
MIDDLE = {
    "resnet_widths": {"model.stem_widths.0": 64, "model.block_widths.0": 90, "model.block_widths.1": 64,
                      "model.num_blocks": 8, "model.block_kernel": 25, "model.block_dropout": 0.15,
                      "model.dropout": 0.25},
    "vit_patch_depth": {"model.patch_size": 50, "model.depth": 7, "model.embed_dim": 192,
                        "model.num_heads": 6, "model.mlp_ratio": 3.0, "model.dropout": 0.15},
}  # fmt: skip


def time_network(name: str, repeats: int = 3) -> tuple[float, float]:
    import torch

    from ecgtune.models import build_model
    from ecgtune.shipped import sweep_spec_path
    from ecgtune.spec import apply_params, load_spec

    torch.set_num_threads(1)
    spec = apply_params(load_spec(sweep_spec_path(name)), MIDDLE[name])
    model = build_model(spec.network_config())
    optimizer = torch.optim.AdamW(model.parameters())
    x, y, xe = torch.randn(16, 8, 5000), torch.randn(16, 4), torch.randn(32, 8, 5000)
    train, evaluate = [], []
    for i in range(repeats + 1):
        model.train()
        t0 = time.perf_counter()
        loss = (model(x) - y).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t1 = time.perf_counter()
        model.eval()
        with torch.inference_mode():
            model(xe)
        t2 = time.perf_counter()
        if i:  # the first is a warm-up
            train.append((t1 - t0) / 16)
            evaluate.append((t2 - t1) / 32)
    return min(train), min(evaluate)


def shares(name: str, train: float, evaluate: float, trials_per_backbone: float) -> dict[str, float]:
    from ecgtune.shipped import sweep_spec_path
    from ecgtune.spec import load_spec

    s = shipped_scale(name)
    asha = load_spec(sweep_spec_path(name)).search.asha
    f = asha_mean_epochs(asha.grace_period, asha.reduction_factor, s.finetune_epochs) / s.finetune_epochs
    pre = s.pretrain_epochs * (s.pretrain_ecgs * train + s.eval_ecgs * evaluate)
    ft = s.finetune_epochs * (s.finetune_ecgs * train + s.eval_ecgs * evaluate)
    k = trials_per_backbone
    return {
        "train_s_per_ecg": train,
        "eval_s_per_ecg": evaluate,
        "pretrain_s": pre,
        "finetune_full_s": ft,
        "finetune_fraction": f,
        "share_before": pre / (pre + f * ft),
        "share_after": (pre / k) / (pre / k + f * ft),
        "trials_per_backbone": k,
        "compute_saved_per_trial": (1 - 1 / k) * pre / (pre + f * ft),
        "store_hits_per_trial": 1 - 1 / k,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.shipped_share", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--trials-per-backbone", type=float, required=True)
    args = p.parse_args()
    out = {}
    for name in MIDDLE:
        train, evaluate = time_network(name)
        out[name] = shares(name, train, evaluate, args.trials_per_backbone)
        r = out[name]
        print(
            f"{name}: train {1e3 * train:.1f} ms/ECG, eval {1e3 * evaluate:.1f} ms/ECG on one CPU core; "
            f"pretraining {100 * r['share_before']:.0f}% of an average ASHA trial's compute before sharing, "
            f"{100 * r['share_after']:.0f}% after ({r['trials_per_backbone']:.2f} trials per backbone: "
            f"{100 * r['store_hits_per_trial']:.0f}% of trials hit the store, "
            f"{100 * r['compute_saved_per_trial']:.0f}% of the compute saved)"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

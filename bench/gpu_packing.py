"""The packing part of bench/gpu.py: can several small trials share one GPU (`resources.gpu` < 1)?

Each packed trial is a fresh process (as a Ray worker is): it imports, opens the store, copies its
split to the GPU and trains, then prints one JSON line of timings. Run only through
`python -m bench.gpu --parts packing`; this module's main is that one trial (`pack_worker`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from bench import common


def part_packing(args, models, data, device, results, title_tag: str = "") -> dict:
    """Trials of one model packed onto one GPU as fresh processes (1, 2, 4 at once), alternated over
    repeats: trials per hour against one at a time, each trial's start-up and peak memory."""
    label = args.pack_model
    m = models[label]
    # Size one trial's training to ~pack_seconds alone, from the model's measured bf16 rate.
    epochs = max(1, round(m["rate"] * args.pack_seconds / m["samples"]))
    job = {
        "store": str(data.store_path),
        "config": m["config"],
        "batch_size": args.batch_size,
        "samples": m["samples"],
        "epochs": epochs,
        "eval_n": min(512, m["samples"]),
        "threads": args.pack_threads,
        "device": str(device),
        "seed": args.seed,
    }
    common.log(
        f"packing: {label}, trials of {epochs} epochs x {m['samples']} ECGs (~{args.pack_seconds} s alone)"
    )

    def launch(n_trials: int):
        def run() -> tuple[int, dict[str, Any]]:
            t0 = time.time()
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "bench.gpu_packing", json.dumps({**job, "launched": t0})],
                    cwd=common.REPO,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(n_trials)
            ]
            trials = []
            for p in procs:
                out, _ = p.communicate()
                if p.returncode != 0:
                    raise SystemExit(f"a packed trial failed (exit {p.returncode}); its output:\n{out}")
                trials.append(json.loads(out.strip().splitlines()[-1]))
            return n_trials, {"timed_seconds": time.time() - t0, "trials": trials}

        return run

    sides = {f"{n} per GPU": launch(n) for n in args.pack_trials}
    ref = f"{args.pack_trials[0]} per GPU"
    s = common.summarize_measurements(
        common.alternate(sides, args.pack_repeats, log=common.log), reference=ref
    )
    results.append({"model": label, "job": job, "runs": s})
    rows = []
    for name in sides:
        per_trial = [t for e in s[name]["extra"] for t in e["trials"]]
        rows.append(
            [
                name,
                common.fmt(3600 * s[name]["rate"]["median"], 0),
                common.fmt_ratio(s[name][f"ratio_to_{ref}"]) if name != ref else "1.00x",
                common.fmt(float(np.median([t["start_s"] for t in per_trial])), 1),
                common.fmt(float(np.median([t["train_s"] for t in per_trial])), 1),
                common.fmt(float(np.median([t["peak_gib"] for t in per_trial])), 2),
                ("yes" if s[name][f"ratio_to_{ref}"]["median"] >= 2.5 else "no")
                if name == "4 per GPU"
                else "-",
            ]
        )
    return common.table(
        [
            "trials at once",
            "trials/hour",
            "vs 1 (IQR)",
            "start s/trial",
            "train+eval s/trial",
            "GiB reserved/trial",
            ">= 2.5x",
        ],
        rows,
        title=f"packing: {label} trials as fresh processes sharing one GPU ({epochs} epochs x "
        f"{m['samples']} ECGs, eval every epoch)" + title_tag,
    )


def pack_worker(job_json: str) -> None:
    """One packed trial (a subprocess of part_packing): import, open the store, copy the split to the GPU,
    train `epochs` epochs evaluating after each, print one JSON line of timings."""
    job = json.loads(job_json)
    from ecgtune.data.store import ECGStore, SplitArrays
    from ecgtune.models import build_model
    from ecgtune.train import Batches, TrainConfig, Trainer

    torch.set_num_threads(job["threads"])
    ready = time.time()
    split = ECGStore(job["store"]).split("train")
    k = job["eval_n"]
    val = SplitArrays(split.signals[:k], split.targets[:k], split.target_names, split.record_ids[:k])
    torch.manual_seed(job["seed"])
    cfg = TrainConfig(
        epochs=job["epochs"],
        batch_size=job["batch_size"],
        lr=1e-4,
        samples_per_epoch=job["samples"],
        seed=job["seed"],
    )
    trainer = Trainer(build_model(job["config"]), split, cfg, device=job["device"])
    val_batches = Batches(val, trainer.device)
    t0 = time.time()
    for _ in range(job["epochs"]):
        trainer.train_epoch()
        trainer.evaluate(val_batches)
    done = time.time()
    # Reserved by torch's allocator; the CUDA context (~0.5 GiB per process) comes on top.
    peak = torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else 0.0
    print(
        json.dumps(
            {
                "start_s": t0 - job["launched"],
                "import_s": ready - job["launched"],
                "train_s": done - t0,
                "peak_gib": peak,
            }
        )
    )


if __name__ == "__main__":
    pack_worker(sys.argv[1])

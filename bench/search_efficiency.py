"""Search efficiency (benchmarks part 4): best validation objective vs compute budget (trial-epochs).

Four searchers on the same space (sweeps/smoke.yaml on the embedded demo data), several seeds each:
  (a) TPE + ASHA   (b) random + ASHA   (c) random, no early stopping   (d) the spec's fixed config
The budget is counted in trial-epochs (every epoch any trial trains), so the result does not depend
on how busy the machine is. "Best so far" counts only trials that reached full fidelity: an
ASHA-stopped trial's low-fidelity value is not a result anyone would deploy.

    python bench/search_efficiency.py --seeds 3 --out bench/results/search_efficiency.json
    python bench/search_efficiency.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def curve(experiment: Path, max_epochs: int) -> list[tuple[int, float]]:
    """(trial-epochs spent, best full-fidelity objective so far), in the order epochs happened."""
    events = []
    for f in experiment.glob("*/result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        for r in rows:
            events.append(
                (r["timestamp"], r.get("time_total_s", 0), r["epoch"], r["objective"], f.parent.name)
            )
    events.sort(key=lambda e: (e[0], e[1]))
    spent, best, out = 0, float("inf"), []
    for _, _, epoch, objective, _ in events:
        spent += 1
        if epoch >= max_epochs:
            best = min(best, objective)
        out.append((spent, best))
    return out


def run(method: str, seed: int, base: dict, storage: Path, budget_trials: int) -> dict:
    from ecgtune.search import run_sweep, total_epochs
    from ecgtune.spec import spec_from_dict

    spec = json.loads(json.dumps(base))
    spec["name"] = f"eff-{method}-{seed}"
    search = spec["search"]
    search["searcher"] = {"algorithm": "random" if method.startswith("random") else "tpe", "seed": seed,
                          "n_startup_trials": 4}  # fmt: skip
    if method == "random_no_es":
        search["asha"] = None
        search["num_samples"] = budget_trials
    elif method == "fixed":
        spec.pop("search")
        spec["variants"] = {"fixed": {"seed": seed}}
        spec["search"] = {"space": {}, "num_samples": 1, "asha": None}
    else:
        # ASHA trials are shorter: give them as many trials as the same epoch budget allows at the
        # grace period, and cut the curve at the budget below.
        search["num_samples"] = budget_trials * 2
    spec["seed"] = seed
    spec["run"]["storage_path"] = str(storage)
    spec_from_dict(spec, source=spec["name"])  # validate before spending time
    path = storage / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    t0 = time.time()
    result = run_sweep(path)
    max_t = total_epochs(spec_from_dict(spec))
    return {
        "method": method,
        "seed": seed,
        "wall_s": time.time() - t0,
        "trials": len(result.summary["trials"]),
        "curve": curve(Path(result.experiment_path), max_t),
    }


def best_at(curve: list, budget: int) -> float:
    vals = [b for spent, b in curve if spent <= budget]
    return vals[-1] if vals else float("inf")


def first_reaching(curve: list, target: float) -> int | None:
    for spent, b in curve:
        if b <= target + 1e-12:
            return spent
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=8, help="trials of the no-early-stopping searcher")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "search_efficiency.json"))
    args = p.parse_args()
    if args.quick:
        args.seeds, args.trials = 1, 3

    import ray

    from ecgtune.data.demo import build_demo
    from ecgtune.spec import data_root

    build_demo(data_root() / "demo")
    base = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    base["stages"]["pretrain"]["samples_per_epoch"] = 128 if not args.quick else 32
    base["run"] = {"storage_path": "runs", "max_failures": 0, "checkpoints_kept": 1}
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    max_t = base["stages"]["pretrain"]["epochs"] + base["stages"]["finetune"]["epochs"]
    budget = args.trials * max_t
    runs = []
    methods = ["tpe_asha", "random_asha", "random_no_es", "fixed"]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for method in methods:  # interleaved: every seed runs all four back to back
                runs.append(run(method, seed, base, Path(tmp), args.trials))
                print(
                    f"{method} seed {seed}: {runs[-1]['trials']} trials, {runs[-1]['wall_s']:.0f} s",
                    flush=True,
                )
    ray.shutdown()

    table = {}
    for method in methods:
        rs = [r for r in runs if r["method"] == method]
        table[method] = {
            "best_at_budget": [best_at(r["curve"], budget) for r in rs],
            "epochs_used": [r["curve"][-1][0] if r["curve"] else 0 for r in rs],
        }
    # Budget fraction TPE+ASHA needs to reach the final best of random search without early stopping.
    fractions = []
    for seed in range(args.seeds):
        c = next(r for r in runs if r["method"] == "random_no_es" and r["seed"] == seed)
        a = next(r for r in runs if r["method"] == "tpe_asha" and r["seed"] == seed)
        target = best_at(c["curve"], budget)
        reach = first_reaching(a["curve"], target)
        fractions.append(None if reach is None else reach / budget)
    out = {"budget_trial_epochs": budget, "max_epochs": max_t, "runs": runs, "table": table,
           "tpe_asha_fraction_to_reach_random_final": fractions, "argv": sys.argv}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))

    print(
        f"\nsearch efficiency, budget {budget} trial-epochs, {args.seeds} seed(s); objective, lower is better"
    )
    print(f"{'method':<14} {'median best@budget':>19} {'min':>7} {'max':>7} {'epochs used':>12}")
    for method, row in table.items():
        b, used = np.array(row["best_at_budget"]), np.median(row["epochs_used"])
        print(f"{method:<14} {np.median(b):>19.3f} {b.min():>7.3f} {b.max():>7.3f} {used:>12.0f}")
    print(f"TPE+ASHA budget fraction to reach random-no-ES final best, per seed: {fractions} (goal <= 0.25)")


if __name__ == "__main__":
    main()

"""Search efficiency (benchmarks part 4): best validation objective vs compute budget (trial-epochs).

Four searchers on the same space (the shipped smoke sweep on the embedded demo data), several seeds each:
  (a) TPE + ASHA   (b) random + ASHA   (c) random, no early stopping   (d) the spec's fixed config
The budget is counted in trial-epochs (every epoch any trial trains), so the result does not depend
on how busy the machine is. "Best so far" counts only trials that reached full fidelity: an
ASHA-stopped trial's low-fidelity value is not a result anyone would deploy.

    python -m bench.search_efficiency --seeds 3 --out bench/results/search_efficiency.json
    python -m bench.search_efficiency --quick
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from bench.common import RESULTS_DIR, print_tables, table, write_json
from ecgtune.shipped import sweep_spec_path


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


HISTORY_METRICS = ("objective", "deepfake_val_objective")


def histories(experiment: Path) -> dict[str, list[list[float]]]:
    """Per metric, each trial's value after each of its epochs (stopped trials' lists are shorter):
    the PTB-XL objective, and the DeepFake validation objective that pretraining epochs also report."""
    out: dict[str, list[list[float]]] = {m: [] for m in HISTORY_METRICS}
    for f in sorted(experiment.glob("*/result.json")):
        rows = sorted(
            (json.loads(line) for line in f.read_text().splitlines() if line.strip()),
            key=lambda r: r["epoch"],
        )
        for m in HISTORY_METRICS:
            out[m].append([r.get(m, float("nan")) for r in rows])
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (no ties expected: objectives are continuous)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def rung_agreement(runs: list[dict], max_t: int, pretrain_epochs: int) -> dict:
    """How well a trial's value after epoch k predicts its final objective: Spearman rank correlation
    over the full-length trials of the no-early-stopping searcher (c), per k, for the PTB-XL objective
    (what ASHA ranks trials by at its rungs: a low value at a rung means ASHA stops trials there nearly
    at random) and, during pretraining, the DeepFake validation objective (a candidate proxy)."""
    per_metric: dict[str, list[list[float]]] = {m: [] for m in HISTORY_METRICS}
    for r in runs:
        if r["method"] != "random_no_es":
            continue
        h = r.get("histories", {})
        h = h if isinstance(h, dict) else {"objective": h}  # JSON of 2026-12-01 runs: objective only
        for i, objective in enumerate(h.get("objective", [])):
            if len(objective) >= max_t:
                for m in HISTORY_METRICS:
                    per_metric[m].append(h[m][i] if m in h else [float("nan")] * max_t)
    final = [o[max_t - 1] for o in per_metric["objective"]]
    out: dict = {"trials": len(final), "per_epoch": []}
    for k in range(1, max_t):
        row = {"epoch": k, "stage": "pretraining" if k <= pretrain_epochs else "fine-tuning"}
        for m in HISTORY_METRICS:
            at_k = [v[k - 1] for v in per_metric[m]]
            ok = len(final) > 2 and all(np.isfinite(at_k))
            row[f"spearman_{m}_with_final"] = spearman(at_k, final) if ok else float("nan")
        out["per_epoch"].append(row)
    return out


def run(method: str, seed: int, base: dict, storage: Path, budget_trials: int) -> dict:
    from ecgtune.search import run_sweep
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
    max_t = spec_from_dict(spec).total_epochs
    return {
        "method": method,
        "seed": seed,
        "wall_s": time.time() - t0,
        "trials": len(result.summary["trials"]),
        "curve": curve(Path(result.experiment_path), max_t),
        "histories": histories(Path(result.experiment_path)),
    }


def best_at(curve: list, budget: int) -> float:
    vals = [b for spent, b in curve if spent <= budget]
    return vals[-1] if vals else float("inf")


def first_reaching(curve: list, target: float) -> int | None:
    for spent, b in curve:
        if b <= target + 1e-12:
            return spent
    return None


METHODS = ["tpe_asha", "random_asha", "random_no_es", "fixed"]
LABELS = {
    "tpe_asha": "(a) TPE + ASHA",
    "random_asha": "(b) random + ASHA",
    "random_no_es": "(c) random, no early stopping",
    "fixed": "(d) fixed config (spec's own)",
}


def compare_searchers(
    runs: list[dict], budget: int, seeds: int, max_t: int, pretrain_epochs: int
) -> tuple[dict, list[dict]]:
    """Per-method best at the budget, and the budget fraction (a) needs to reach (c)'s final best."""
    per_method = {}
    for method in [m for m in METHODS if any(r["method"] == m for r in runs)]:
        rs = [r for r in runs if r["method"] == method]
        per_method[method] = {
            "best_at_budget": [best_at(r["curve"], budget) for r in rs],
            "epochs_used": [r["curve"][-1][0] if r["curve"] else 0 for r in rs],
            "wall_s": [r["wall_s"] for r in rs],
        }
    fractions = []
    for seed in range(seeds) if {"random_no_es", "tpe_asha"} <= set(per_method) else ():
        c = next(r for r in runs if r["method"] == "random_no_es" and r["seed"] == seed)
        a = next(r for r in runs if r["method"] == "tpe_asha" and r["seed"] == seed)
        reach = first_reaching(a["curve"], best_at(c["curve"], budget))
        fractions.append(None if reach is None else reach / budget)
    rows = []
    for method, row in per_method.items():
        b = np.array(row["best_at_budget"])
        rows.append(
            [
                LABELS[method],
                f"{np.median(b):.3f}",
                f"{b.min():.3f}-{b.max():.3f}",
                f"{np.median(row['epochs_used']):.0f}",
                f"{np.median(row['wall_s']):.0f}",
            ]
        )
    reached = [f for f in fractions if f is not None]
    frac_text = ", ".join("not reached" if f is None else f"{f:.0%}" for f in fractions)
    tables = [
        table(
            ["searcher", "median best at budget", "range over seeds", "trial-epochs used", "wall s"],
            rows,
            title=f"search efficiency, budget {budget} trial-epochs, {seeds} seed(s); lower = better",
        )
    ]
    if fractions:
        tables.append(
            table(
                ["measure", "value"],
                [
                    ["budget fraction (a) needs to reach (c)'s final best, per seed", frac_text],
                    ["median of those reached", f"{np.median(reached):.0%}" if reached else "-"],
                    ["goal", "<= 25%"],
                ],
                title="TPE + ASHA against random search without early stopping",
            )
        )
    agreement = rung_agreement(runs, max_t, pretrain_epochs)
    if agreement["trials"]:
        tables.append(
            table(
                ["after epoch", "stage", "PTB-XL objective (ASHA's)", "DeepFake val objective"],
                [
                    [
                        e["epoch"],
                        e["stage"],
                        f"{e['spearman_objective_with_final']:.2f}",
                        f"{e['spearman_deepfake_val_objective_with_final']:.2f}",
                    ]
                    for e in agreement["per_epoch"]
                ],
                title=f"do early epochs rank trials as their final objective does? Spearman rho with the "
                f"final PTB-XL objective, {agreement['trials']} full-length trials of (c)",
            )
        )
    results = {
        "budget_trial_epochs": budget,
        "runs": runs,
        "per_method": per_method,
        "tpe_asha_fraction_to_reach_random_final": fractions,
        "rung_agreement": agreement,
    }
    return results, tables


def plot(runs: list[dict], budget: int, path: Path) -> None:
    """Best full-fidelity objective so far against trial-epochs spent: median over seeds, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.arange(1, budget + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in [m for m in METHODS if any(r["method"] == m for r in runs)]:
        curves: list[np.ndarray] = []
        for r in (r for r in runs if r["method"] == method):
            spent = np.array([c[0] for c in r["curve"]] or [0])
            best = np.array([c[1] for c in r["curve"]] or [np.inf])
            at = np.searchsorted(spent, grid, side="right") - 1
            curves.append(np.where(at >= 0, best[np.clip(at, 0, None)], np.inf))
        y = np.array(curves, float)
        y[~np.isfinite(y)] = np.nan  # no full-fidelity trial yet
        with warnings.catch_warnings():  # columns where no seed has a result yet are NaN, as meant
            warnings.simplefilter("ignore", RuntimeWarning)
            med, low, high = np.nanmedian(y, axis=0), np.nanmin(y, axis=0), np.nanmax(y, axis=0)
        # (a) dashed and on top: with few trials TPE is still in its random start-up and (a) and (b) overlap
        dashed = method == "tpe_asha"
        (line,) = ax.step(grid, med, where="post", label=LABELS[method], linestyle="--" if dashed else "-",
                          zorder=3 if dashed else 2)  # fmt: skip
        ax.fill_between(grid, low, high, step="post", alpha=0.15,
                        color=line.get_color())  # fmt: skip
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best full-fidelity objective (lower is better)")
    ax.set_title("search efficiency on the demo data (median over seeds, min-max band)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=8, help="trials of the no-early-stopping searcher")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS, help="searchers to run (all)")
    p.add_argument("--out", default=str(RESULTS_DIR / "search_efficiency.json"))
    p.add_argument("--from-json", help="no runs: tables and plot from the runs of an earlier JSON")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.trials = 1, 3
    base = yaml.safe_load(sweep_spec_path("smoke").read_text())
    max_t = base["stages"]["pretrain"]["epochs"] + base["stages"]["finetune"]["epochs"]
    if args.from_json:
        earlier = json.loads(Path(args.from_json).read_text())
        earlier = earlier.get("results", earlier)
        runs, budget = earlier["runs"], earlier["budget_trial_epochs"]
        args.seeds = len({r["seed"] for r in runs})
    else:
        runs, budget = sweep_all(args, base, max_t), args.trials * max_t
    results, tables = compare_searchers(runs, budget, args.seeds, max_t, base["stages"]["pretrain"]["epochs"])
    out = Path(args.out)
    write_json(out, "search_efficiency", args, results, tables)
    plot(runs, budget, out.with_suffix(".png"))
    print_tables(tables, notes=[f"wrote {out} and {out.with_suffix('.png')}"])


def sweep_all(args: argparse.Namespace, base: dict, max_t: int) -> list[dict]:
    import ray

    from ecgtune.data.demo import build_demo
    from ecgtune.data.locate import data_root

    build_demo(data_root() / "demo")
    base["stages"]["pretrain"]["samples_per_epoch"] = 128 if not args.quick else 32
    base["run"] = {"storage_path": "runs", "max_failures": 0, "checkpoints_kept": 1}
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for method in args.methods:  # interleaved: every seed runs all of them back to back
                runs.append(run(method, seed, base, Path(tmp), args.trials))
                print(
                    f"{method} seed {seed}: {runs[-1]['trials']} trials, {runs[-1]['wall_s']:.0f} s",
                    flush=True,
                )
    ray.shutdown()
    return runs


if __name__ == "__main__":
    main()

"""Search efficiency on the learning-curve table (docs/benchmarks.md part 4), through ecgtune's real driver.

A **replay trainable** stands in for training: it looks up the suggested configuration in the table
(`bench.curve_table`) and reports that configuration's recorded epochs one by one, with the keys a
real trial reports (`objective`, `epoch`, `finetune_epoch`, `diverged`, the MAEs, ...). Everything
else is the code users run: `ecgtune.search.build_tuner` makes the Tuner with ecgtune's searcher
(`PruneAwareOptunaSearch`), ASHA (`DivergenceAwareASHA`), the spec's clock and concurrency. Each
replayed epoch sleeps its recorded wall time times `--time-scale`, so trials of slow and fast
configurations interleave on ASHA's asynchronous rungs as they would on a cluster.

Strategies, each for several seeds at an equal budget of trial-epochs (every epoch any trial trains):
  tpe_asha       TPE + ASHA as ecgtune ships it (stopped trials told PRUNED at ASHA's clock; the smoke
                 sweep's ASHA: rungs at fine-tuning epochs 3 and 6)
  stock_optuna   the same with Ray's stock OptunaSearch (stopped trials told COMPLETE)
  random_asha    random search + ASHA
  random_no_es   random search, every trial to the end
  tpe_asha_all   TPE + ASHA counting all epochs (pretraining's zero-shot read-outs too) on ASHA's clock
  tpe_asha_grace1  TPE + ASHA with rungs at fine-tuning epochs 1, 3, 9 (grace 1, reduction factor 3)
  tpe_asha_grace5  TPE + ASHA whose only rung is fine-tuning epoch 5
  fixed          the spec's base configuration (one trial)
"Best so far" counts only trials that trained every epoch: a stopped trial's low-fidelity value is not
a model anyone would deploy.

    python -m bench.replay run --seeds 10              # ~30 min on 2 cores -> bench/results/replay.json
    python -m bench.replay driver-cost --trials 1000   # what the driver costs per trial as trials grow
    python -m bench.replay report                      # tables + docs/search_efficiency.png
    python -m bench.replay run --quick                 # seconds: shows it works, measures nothing
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import json
import math
import os
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from bench.curve_table import SPACE_SPEC, TABLE_FILE, CurveTable, final_objective, grid_keys
from ecgtune.searchers import PruneAwareOptunaSearch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "replay.json"
DRIVER_COST = REPO / "bench" / "results" / "replay_driver_cost.json"
PLOT = REPO / "docs" / "search_efficiency_replay.png"
STRATEGIES = (
    "tpe_asha",
    "stock_optuna",
    "random_asha",
    "random_no_es",
    "tpe_asha_all",
    "tpe_asha_grace1",
    "tpe_asha_grace5",
    "fixed",
)
REPLAY_KEY = "replay"  # the config entry that tells the replay trainable where the table is

# ----------------------------------------------------------------------------------- the trainable

_TABLES: dict[str, CurveTable] = {}  # per worker process: the table, read once


def searched_values(spec: Any) -> dict[str, Any]:
    """The table's key of a trial's resolved spec: its value at every key of the table's space
    (`model.<knob>[.<index>]` or `<stage>.<setting>`), whether a searcher or a variant chose it."""
    values = {}
    for key in grid_keys(_table_space()):
        head, _, rest = key.partition(".")
        if head == "model":
            knob, _, index = rest.partition(".")
            value = spec.model.params[knob]
            values[key] = value[int(index)] if index else value
        else:
            values[key] = getattr(getattr(spec.stages, head), rest)
    return values


@functools.cache
def _table_space() -> dict[str, Any]:
    from ecgtune.spec import load_spec

    return dict(load_spec(SPACE_SPEC).search.space)


def replay_trial(config: dict[str, Any]) -> None:
    """A Tune function trainable that reports a configuration's recorded epochs instead of training."""
    from ecgtune.experiment import trial_spec
    from ecgtune.spec import Spec

    setting = config["spec"]["origin"][REPLAY_KEY]
    table = _TABLES.get(setting["table"])
    if table is None:
        table = _TABLES[setting["table"]] = CurveTable(Path(setting["table"]))
    epochs = table.epochs(searched_values(trial_spec(Spec.model_validate(config["spec"]), config)))
    for e in epochs:
        time.sleep((e["epoch_seconds"] or 0.0) * setting["time_scale"])
        metrics = {**e, "objective": math.nan if e["objective"] is None else e["objective"]}
        metrics["total_epochs"] = len(epochs)
        tune.report(metrics)
        if e["diverged"]:
            return


# ------------------------------------------------------------------------------------- the runs


class Budget(tune.Stopper):
    """A Tune stopper that records every result in the order the driver saw it and ends the
    experiment once `limit` trial-epochs were spent (Tune calls a stopper on every result, before the
    scheduler decides; and once more with a trial's last result when its function returns, which is
    not another epoch)."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.events: list[tuple] = []  # trial, epoch, objective, total epochs, driver clock
        self._seen: set[tuple[str, int]] = set()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if (trial_id, int(result["epoch"])) in self._seen:
            return False
        self._seen.add((trial_id, int(result["epoch"])))
        value = result.get("objective")
        finite = value is not None and math.isfinite(value)
        self.events.append(
            (
                trial_id,
                int(result["epoch"]),
                value if finite else None,
                int(result["total_epochs"]),
                time.perf_counter(),
            )
        )
        return False

    def stop_all(self) -> bool:
        return self.limit is not None and len(self.events) >= self.limit


def strategy_spec(name: str, seed: int, table: Path, time_scale: float, concurrency: int):
    """The table's spec, set up as one strategy: its searcher, scheduler and clock."""
    from ecgtune.spec import load_spec

    spec = load_spec(SPACE_SPEC)
    search = spec.search
    searcher = search.searcher.model_copy(update={"seed": seed})
    asha = search.asha
    if name in ("random_asha", "random_no_es"):
        searcher = searcher.model_copy(update={"algorithm": "random"})
    if name == "random_no_es":
        asha = None
    if name == "tpe_asha_all":
        asha = asha.model_copy(update={"clock": "all"})
    if name == "tpe_asha_grace1":
        asha = asha.model_copy(update={"grace_period": 1, "reduction_factor": 3})
    if name == "tpe_asha_grace5":
        asha = asha.model_copy(update={"grace_period": 5})
    search = search.model_copy(
        update={
            "searcher": searcher,
            "asha": asha,
            "num_samples": 10_000,
            "max_concurrent_trials": concurrency,
        }
    )
    origin = {REPLAY_KEY: {"table": str(table), "time_scale": time_scale}}
    update: dict[str, Any] = {
        "search": search,
        "origin": origin,
        "resources": spec.resources.model_copy(update={"cpu": 0.25}),
    }
    if name == "fixed":
        update.update(search=None, variants={"fixed": {}})
    return spec.model_copy(update=update)


class StockOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch as it ships, behind the constructor ecgtune's driver calls: steps on Tune's
    `training_iteration`, and a trial ASHA stopped told COMPLETE with the value it was stopped on."""

    def __init__(self, *args: Any, clock: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def study_states(self) -> dict[str, int]:
        return dict(Counter(t.state.name.lower() for t in self._ot_study.get_trials(deepcopy=False)))


SUGGEST_SECONDS: list[float] = []  # TimedSearch's suggestion times, in the driver process


class TimedSearch(PruneAwareOptunaSearch):
    """ecgtune's searcher, timing each suggestion (TPE's cost grows with the trials it has seen)."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            return super().suggest(trial_id)
        finally:
            SUGGEST_SECONDS.append(time.perf_counter() - started)


def run_strategy(
    name: str,
    seed: int,
    budget: int | None,
    table: Path,
    time_scale: float,
    concurrency: int,
    num_samples: int | None = None,
    searcher: type | None = None,
) -> dict[str, Any]:
    """One seed of one strategy through ecgtune's driver; the events in the order the driver saw them.
    `searcher`: a class the driver builds in place of ecgtune's searcher (same constructor)."""
    import ecgtune.search as driver

    spec = strategy_spec(name, seed, table, time_scale, concurrency)
    if num_samples is not None and spec.search is not None:
        spec = spec.model_copy(update={"search": spec.search.model_copy(update={"num_samples": num_samples})})
    stop = Budget(budget)
    searcher = StockOptunaSearch if name == "stock_optuna" else searcher
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as storage, contextlib.redirect_stdout(io.StringIO()):
        sweep = driver.build_tuner(
            spec, storage, f"replay-{name}-{seed}", trainable=replay_trial, stop=stop, searcher_class=searcher
        )
        sweep.tuner.fit()
    wall = time.perf_counter() - started
    states = sweep.searcher.study_states() if sweep.searcher is not None else None
    return {
        "strategy": name,
        "seed": seed,
        "budget": budget,
        "wall_s": wall,
        "events": stop.events,
        "optuna_states": states,
    }


def init_ray() -> None:
    """A local Ray on loopback for the replays (ecgtune's own start-up rule, with the CPUs it finds)."""
    from ecgtune.search import _init_ray

    _init_ray(None)


# ----------------------------------------------------------------------------------- the analysis


def best_curve(events: list[tuple], budget: int) -> np.ndarray:
    """best_so_far[b-1] = the best objective of a trial that trained every epoch, after b trial-epochs."""
    out = np.full(budget, np.inf)
    best = np.inf
    for i, (_, epoch, value, total, _) in enumerate(events[:budget]):
        if epoch >= total and value is not None:
            best = min(best, value)
        out[i] = best
    out[len(events[:budget]) :] = best
    return out


def budget_to_reach(curve: np.ndarray, target: float) -> float:
    """The fraction of the budget after which a curve is at or below `target` (inf: never)."""
    hit = np.flatnonzero(curve <= target + 1e-12)
    return float((hit[0] + 1) / len(curve)) if len(hit) else math.inf


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def rank_agreement(table: CurveTable) -> list[dict[str, Any]]:
    """Spearman correlation of each epoch's objective with the final one, over configurations that
    did not diverge: how much an early rung tells about the end."""
    rows = [r for r in table if math.isfinite(final_objective(r))]
    final = np.array([final_objective(r) for r in rows])
    out = []
    for k, e in enumerate(rows[0]["epochs"]):
        values = np.array([r["epochs"][k]["objective"] for r in rows], dtype=float)
        ok = np.isfinite(values)
        out.append(
            {
                "epoch": k + 1,
                "stage": e["stage"],
                "finetune_epoch": e["finetune_epoch"],
                "spearman": spearman(values[ok], final[ok]),
                "n": int(ok.sum()),
            }
        )
    return out


def quantiles(values: list[float]) -> dict[str, float]:
    """Median and quartiles; `inf` (a seed that never reached a target) sorts last, so a quantile that
    falls on such a seed is inf ("not reached"), never NaN."""
    a = np.sort(np.array(values, dtype=float))
    pick = {"median": 0.5, "q25": 0.25, "q75": 0.75}
    return {k: float(a[int(round(q * (len(a) - 1)))]) for k, q in pick.items()}


def analyse(runs: list[dict[str, Any]], budget: int, table: CurveTable) -> dict[str, Any]:
    curves: dict[str, list[np.ndarray]] = {}
    for r in runs:
        curves.setdefault(r["strategy"], []).append(best_curve(r["events"], budget))
    by_seed = {(r["strategy"], r["seed"]): best_curve(r["events"], budget) for r in runs}
    finals = {s: [float(c[-1]) for c in cs] for s, cs in curves.items()}
    fractions = {}
    if "random_no_es" in curves:
        for s in curves:
            if s in ("random_no_es", "fixed"):
                continue
            per_seed = [
                budget_to_reach(by_seed[(s, seed)], float(by_seed[("random_no_es", seed)][-1]))
                for (st, seed) in by_seed
                if st == s and ("random_no_es", seed) in by_seed
            ]
            fractions[s] = {
                "per_seed": per_seed,
                **quantiles(per_seed),
                "reached": sum(math.isfinite(f) for f in per_seed),
            }
    all_finals = sorted(final_objective(r) for r in table)
    return {
        "budget": budget,
        "final_best": {s: {**quantiles(v), "per_seed": v} for s, v in finals.items()},
        "budget_fraction_to_reach_random_no_es": fractions,
        "table_best": all_finals[0],
        "table_median": float(np.median([f for f in all_finals if math.isfinite(f)])),
        "rank_agreement": rank_agreement(table),
    }


# --------------------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> None:
    table = CurveTable(args.table)
    table.require_grid(_table_space())
    epochs = len(next(iter(table))["epochs"])
    budget = args.budget_trials * epochs
    seeds = range(args.seeds)
    strategies = args.strategies or list(STRATEGIES)
    init_ray()
    runs = []
    for seed in seeds:  # seeds outermost: a slow spell of a shared machine hits every strategy alike
        for name in strategies:
            if name == "fixed" and seed > 0:
                continue  # one configuration, one recorded curve: every seed would replay the same
            r = run_strategy(
                name, seed, None if name == "fixed" else budget, args.table, args.time_scale, args.concurrency
            )
            runs.append(r)
            best = best_curve(r["events"], budget)[-1]
            print(
                f"{name:<14} seed {seed:>2}: {len(r['events'])} trial-epochs, best {best:.4f}, "
                f"{r['wall_s']:.1f} s",
                flush=True,
            )
    result = {
        "settings": {
            "budget_trials": args.budget_trials,
            "epochs_per_trial": epochs,
            "seeds": args.seeds,
            "time_scale": args.time_scale,
            "concurrency": args.concurrency,
            "table": str(args.table),
            "table_provenance": table.provenance,
        },
        "analysis": analyse(runs, budget, table),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, default=float))
    print(f"wrote {args.out}")
    print_report(result)


def cmd_driver_cost(args: argparse.Namespace) -> None:
    """The driver's wall time per trial as the trial count grows, and TPE's suggestion time in it."""
    CurveTable(args.table).require_grid(_table_space())
    init_ray()
    SUGGEST_SECONDS.clear()
    r = run_strategy(
        "tpe_asha", 0, None, args.table, 0.0, args.concurrency, num_samples=args.trials, searcher=TimedSearch
    )
    first_result: dict[str, float] = {}
    for trial, _, _, _, at in r["events"]:
        first_result.setdefault(trial, at)
    starts = sorted(first_result.values())
    n = len(starts)
    blocks = []
    for lo in range(0, n - 1, 100):
        hi = min(lo + 100, n - 1)
        blocks.append(
            {
                "trials": f"{lo + 1}-{hi + 1}",
                "driver_ms_per_trial": 1e3 * (starts[hi] - starts[lo]) / (hi - lo),
                "suggest_ms_median": 1e3 * float(np.median(SUGGEST_SECONDS[lo:hi])),
            }
        )
    result = {
        "trials": n,
        "wall_s": r["wall_s"],
        "trial_epochs": len(r["events"]),
        "suggest_total_s": float(sum(SUGGEST_SECONDS)),
        "blocks": blocks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for b in blocks:
        print(
            f"trials {b['trials']:>9}: {b['driver_ms_per_trial']:6.0f} ms of driver wall time per trial, "
            f"TPE suggestion {b['suggest_ms_median']:5.1f} ms (median)"
        )
    print(f"{n} trials in {r['wall_s']:.0f} s; TPE suggestions {result['suggest_total_s']:.0f} s of it")


def _percent(fraction: float) -> str:
    return "not reached" if math.isinf(fraction) else f"{100 * fraction:.0f}%"


def print_report(result: Mapping[str, Any]) -> None:
    a = result["analysis"]
    s = result["settings"]
    print(
        f"\nbudget {a['budget']} trial-epochs (= {s['budget_trials']} trials of "
        f"{s['epochs_per_trial']} epochs), "
        f"{s['seeds']} seeds; table best {a['table_best']:.4f}, median {a['table_median']:.4f}"
    )
    print(
        f"{'strategy':<14} {'final best: median':>18} {'IQR':>17}   budget to reach random_no_es's final best"
    )
    for name, q in a["final_best"].items():
        f = a["budget_fraction_to_reach_random_no_es"].get(name)
        frac = (
            ""
            if f is None
            else (
                f"{_percent(f['median'])} (IQR {_percent(f['q25'])} to {_percent(f['q75'])}), "
                f"reached in {f['reached']}/{len(f['per_seed'])}"
            )
        )
        print(f"{name:<14} {q['median']:>18.4f} {q['q25']:>8.4f}-{q['q75']:.4f}   {frac}")
    print("\nrank agreement of epoch k's objective with the final objective (Spearman):")
    print(
        "  "
        + ", ".join(
            f"{r['epoch']}{'p' if r['stage'] == 'pretrain' else ''}: {r['spearman']:.2f}"
            for r in a["rank_agreement"]
        )
    )


def cmd_report(args: argparse.Namespace) -> None:
    result = json.loads(args.results.read_text())
    # The analysis again, from the recorded events: a change to it needs no new replay.
    table = CurveTable(Path(result["settings"]["table"]))
    result["analysis"] = analyse(result["runs"], result["analysis"]["budget"], table)
    args.results.write_text(json.dumps(result, default=float))
    print_report(result)
    plot(result, args.plot)


def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = result["analysis"]["budget"]
    curves: dict[str, list[np.ndarray]] = {}
    for r in result["runs"]:
        curves.setdefault(r["strategy"], []).append(best_curve(r["events"], budget))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = np.arange(1, budget + 1)
    for name, cs in curves.items():
        a = np.vstack(cs)
        a = np.where(np.isfinite(a), a, np.nan)
        if name == "fixed":
            ax.axhline(np.nanmin(a), color="grey", ls=":", label="fixed (spec's base config)")
            continue
        with warnings.catch_warnings():  # before a strategy's first full-length trial: all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(a, axis=0)
            low, high = np.nanquantile(a, 0.25, axis=0), np.nanquantile(a, 0.75, axis=0)
        (line,) = ax.plot(x, med, label=f"{name} (median of {len(cs)})")
        ax.fill_between(
            x,
            low,
            high,
            color=line.get_color(),
            alpha=0.15,
        )
    ax.axhline(result["analysis"]["table_best"], color="black", lw=0.8, label="best in the table")
    ax.set_xlabel("budget spent (trial-epochs)")
    ax.set_ylabel("best full-length objective so far")
    ax.set_title("Learning-curve table replayed through ecgtune's driver (band: IQR over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="every strategy, several seeds, equal budget")
    r.add_argument("--table", type=Path, default=TABLE_FILE)
    r.add_argument("--seeds", type=int, default=10)
    r.add_argument("--budget-trials", type=int, default=24, help="budget in full-length trials' epochs")
    r.add_argument("--time-scale", type=float, default=0.002, help="replayed epoch = recorded seconds x this")
    r.add_argument("--concurrency", type=int, default=4)
    r.add_argument("--strategies", nargs="*", choices=STRATEGIES)
    r.add_argument("--out", type=Path, default=RESULTS)
    r.add_argument("--quick", action="store_true", help="2 seeds, a small budget: shows it works")
    d = sub.add_parser("driver-cost", help="driver time per trial up to --trials trials")
    d.add_argument("--table", type=Path, default=TABLE_FILE)
    d.add_argument("--trials", type=int, default=1000)
    d.add_argument("--concurrency", type=int, default=4)
    d.add_argument("--out", type=Path, default=DRIVER_COST)
    o = sub.add_parser("report", help="tables and plot from a results file")
    o.add_argument("--results", type=Path, default=RESULTS)
    o.add_argument("--plot", type=Path, default=PLOT)
    args = p.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if args.command == "run":
        if args.quick:
            args.seeds, args.budget_trials = 2, 4
        cmd_run(args)
    elif args.command == "driver-cost":
        cmd_driver_cost(args)
    else:
        cmd_report(args)


if __name__ == "__main__":
    # Run as the module `bench.replay`, not as `__main__`: Tune pickles the trainable, the searcher and
    # the stopper by their module's name, and Ray's workers can import `bench.replay`, never a `__main__`.
    importlib.import_module("bench.replay").main()

"""What the replays of bench/replay.py say, against compute (docs/benchmarks.md part 4).

- Normalized regret of a run after `c` compute seconds: (best full-fidelity objective so far - f*) /
  (f_med - f*), with f* the best objective of the space (the surrogate's minimum over 65,536 Sobol
  points and the recorded configurations) and f_med the median objective of a random configuration;
  1 before the first full-fidelity trial. Its area under the curve is the mean regret over [0, budget].
- Random search's baseline is Monte Carlo on the surrogate (4,000 runs of uniform draws, each charged its
  configuration's full cost), not one run: E[best](c) and its quantiles.
- The random-equivalent budget of a run: the compute at which random search's expected best equals the
  run's best at the budget, as a multiple of the budget (2 = worth twice random search's compute).
- Mean rank per seed: strategies ranked by best at the budget within each seed index, averaged.
- The goal of "Pay for pretraining once": the compute a strategy needs to reach random search's median
  final best at the budget, as a share of that budget; met where it is <= 25% in >= 50% of seeds.
- Power: how often a one-sided Mann-Whitney test at 5% tells random search at twice the budget from
  random search at the budget, with the number of seeds used (by Monte Carlo).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.replay import RESULTS_DIR

REPO = Path(__file__).resolve().parents[1]
PLOT = REPO / "docs" / "search_efficiency_replay.png"
GRID = 200  # points of the compute axis per budget


@dataclass
class Reference:
    """The space's best and median objective, and random search by Monte Carlo (costs in FTE)."""

    f_star: float
    f_median: float
    grid_fte: np.ndarray  # compute axis up to the largest budget x `reach`
    random_best: np.ndarray  # (runs, grid): best full-fidelity objective of random search after c


def reference(
    budget_fte: float, reach: float = 32.0, runs: int = 4000, seed: int = 0, kind: str = "surrogate"
) -> Reference:
    from scipy.stats import qmc

    from bench.blackbox import load_blackbox
    from bench.curve_table import load_space_spec
    from bench.replay import full_trial_seconds
    from bench.unit_cube import cube_keys, decode

    bb = load_blackbox(kind)
    space = load_space_spec().search.space
    keys = cube_keys(space)
    points = qmc.Sobol(len(keys), scramble=True, seed=seed).random_base2(16)
    configs = [decode(space, keys, u) for u in points]
    finals = bb.final_objectives(configs)
    recorded = [r["config"] for r in bb.surrogate.rows]
    f_star = float(min(finals.min(), bb.final_objectives(recorded).min()))
    fte = full_trial_seconds(kind)
    cost = np.array([bb.costs(c).full_trial(bb.pretrain_epochs, bb.finetune_epochs) for c in configs]) / fte
    grid = np.linspace(0, budget_fte * reach, int(GRID * reach) + 1)
    rng = np.random.default_rng(seed)
    best = np.empty((runs, len(grid)))
    for r in range(runs):
        n = int(2 * grid[-1] / cost.mean()) + 10
        pick = rng.integers(0, len(configs), n)
        done = np.cumsum(cost[pick])  # compute at which each drawn trial has finished
        running = np.minimum.accumulate(finals[pick])
        idx = np.searchsorted(done, grid, side="right") - 1
        best[r] = np.where(idx >= 0, running[np.clip(idx, 0, None)], np.inf)
    return Reference(f_star, float(np.median(finals)), grid, best)


def best_at(run: dict[str, Any], grid_s: np.ndarray) -> np.ndarray:
    """A run's best full-fidelity objective after each compute of `grid_s` (inf before its first)."""
    out = np.full(len(grid_s), np.inf)
    for spent, value in run["best_steps"]:
        out[grid_s >= spent] = np.minimum(out[grid_s >= spent], value)
    return out


def regret(best: np.ndarray, ref: Reference) -> np.ndarray:
    r = (best - ref.f_star) / (ref.f_median - ref.f_star)
    return np.clip(np.where(np.isfinite(r), r, 1.0), 0.0, 1.0)


def random_equivalent(value: float, ref: Reference, budget_fte: float) -> float:
    """The multiple of the budget at which random search's expected best reaches `value` (inf: beyond)."""
    expected = np.where(np.isfinite(ref.random_best), ref.random_best, np.nan)
    mean = np.nanmean(expected, axis=0)
    hit = np.flatnonzero(mean <= value)
    return float(ref.grid_fte[hit[0]] / budget_fte) if len(hit) else math.inf


def load_runs(budget_fte: float, tag: str = "") -> dict[str, list[dict[str, Any]]]:
    """Every run at `budget_fte` with results tag `tag` ("" for the committed surrogate), by strategy."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    suffix = f"@{budget_fte:g}fte{'-' + tag if tag else ''}.jsonl"
    for f in sorted(RESULTS_DIR.glob(f"*{suffix}")):
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                runs[r["strategy"]].append(r)
    return dict(runs)


def analyse(runs: dict[str, list[dict[str, Any]]], ref: Reference, budget_fte: float,
            at: Sequence[float] = (24, 48, 96)) -> dict[str, Any]:  # fmt: skip
    """Per strategy: best and regret at each budget, AUC, random-equivalent budget, the goal."""
    at = [b for b in at if b <= budget_fte]
    random_final = ref.random_best[:, np.searchsorted(ref.grid_fte, budget_fte)]
    target = float(np.median(random_final))
    out: dict[str, Any] = {
        "f_star": ref.f_star,
        "f_median": ref.f_median,
        "random_target": target,
        "strategies": {},
    }
    ranks: dict[int, dict[str, float]] = defaultdict(dict)
    for name, rs in runs.items():
        fte = rs[0]["fte_seconds"]
        grid_s = ref.grid_fte[ref.grid_fte <= budget_fte] * fte
        curves = np.array([best_at(r, grid_s) for r in rs])
        reg = regret(curves, ref)
        finals = curves[:, -1]
        reach = []
        for c in curves:
            hit = np.flatnonzero(c <= target)
            reach.append(float(grid_s[hit[0]] / grid_s[-1]) if len(hit) else math.inf)
        for r, f in zip(rs, finals, strict=True):
            ranks[r["index"]][name] = f
        out["strategies"][name] = {
            "seeds": len(rs),
            "best_at": {
                str(b): _quartiles(curves[:, min(np.searchsorted(grid_s / fte, b), len(grid_s) - 1)])
                for b in at
            },
            "regret_at": {
                str(b): _quartiles(reg[:, min(np.searchsorted(grid_s / fte, b), len(grid_s) - 1)]) for b in at
            },
            "auc": _quartiles(reg.mean(axis=1)),
            "random_equivalent": _quartiles([random_equivalent(f, ref, budget_fte) for f in finals]),
            "reach_random_median": {**_quartiles(reach), "le_25pct": float(np.mean(np.array(reach) <= 0.25))},
            "pretrain_share": _quartiles([r["pretrain_s"] / max(r["spent_s"], 1e-9) for r in rs]),
            "trials": _quartiles([r["trials"] for r in rs]),
            "reusing_trials": _quartiles([r["reusing_trials"] for r in rs]),
            "wall_s": _quartiles([r["wall_s"] for r in rs]),
            "per_seed": {"auc": list(reg.mean(axis=1)), "reach": reach, "final": list(finals)},
        }
    # Ranked among the strategies with the full 30 seeds (or the most, if fewer) only, so that adding a
    # strategy run with fewer seeds (a variant) or more (a confirmation on fresh seeds) leaves the others'
    # ranks as they were; a variant's own rank is not given, and only seeds all of them have are ranked.
    full = min(30, max(len(rs) for rs in runs.values()))
    names = [n for n, rs in runs.items() if len(rs) >= full]
    mean_rank = defaultdict(list)
    for by_name in ranks.values():
        if any(n not in by_name for n in names):
            continue
        order = _rank([by_name[n] for n in names])
        for n, rk in zip(names, order, strict=True):
            mean_rank[n].append(rk)
    for n in runs:
        out["strategies"][n]["mean_rank"] = float(np.mean(mean_rank[n])) if mean_rank[n] else None
    return out


# Each alternative strategy is compared with the one it would replace: another sampler or the scaled
# start-up with TPE + ASHA as shipped, HyperBand with ASHA (both random search).
BASELINE_OF = {
    "tpe_asha_scaled": "tpe_asha",
    "tpe_mv_asha": "tpe_asha",
    "gp_asha": "tpe_asha",
    "random_hyperband": "random_asha",
}


def _compared(a: str, b: str) -> bool:
    """Whether `b` is `a` changed in one respect: + sharing, + warm start, or another sampler/scheduler
    (`BASELINE_OF`, with or without sharing on both sides)."""
    if b.startswith(a + "+share") and "+warm" not in b:
        return True
    if b.endswith("+warm") and b.removesuffix("+warm") == a:
        return True
    base_b, _, share_b = b.partition("+")
    base_a, _, share_a = a.partition("+")
    return BASELINE_OF.get(base_b) == base_a and share_a == share_b


def comparisons(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each pair `_compared` names: two-sided Mann-Whitney p-values on the per-seed AUC, compute to reach
    random search's median (not reached ranks last) and final best. Seeds are independent, so the test
    is unpaired."""
    from scipy.stats import mannwhitneyu

    strategies = result["strategies"]
    out = []
    for a in sorted(strategies):
        for b in sorted(strategies):
            if not _compared(a, b):
                continue
            row: dict[str, Any] = {"a": a, "b": b}
            for measure in ("auc", "reach", "final"):
                x, y = (np.nan_to_num(strategies[n]["per_seed"][measure], posinf=1e9) for n in (a, b))
                row[measure] = {  # a seed's value (not a mean of two): "not reached" stays readable
                    "median_a": _quartiles(x)["median"],
                    "median_b": _quartiles(y)["median"],
                    "p": float(mannwhitneyu(x, y, alternative="two-sided").pvalue),
                }
            out.append(row)
    return out


def power(ref: Reference, budget_fte: float, seeds: int, reps: int = 2000, seed: int = 1) -> dict[str, float]:
    """P(one-sided Mann-Whitney at 5% tells random search at 2x the budget from random at 1x), on the
    final best and on the AUC, with `seeds` runs each, by resampling the Monte Carlo runs."""
    from scipy.stats import mannwhitneyu

    i1 = np.searchsorted(ref.grid_fte, budget_fte)
    i2 = np.searchsorted(ref.grid_fte, 2 * budget_fte)
    final1, final2 = ref.random_best[:, i1], ref.random_best[:, i2]
    reg = regret(ref.random_best, ref)
    auc1 = reg[:, : i1 + 1].mean(axis=1)
    # The strategy worth twice the budget reaches at c what random reaches at 2c: its AUC over [0, B].
    auc2 = reg[:, : 2 * i1 + 1 : 2].mean(axis=1)
    rng = np.random.default_rng(seed)
    hits = {"final_best": 0, "auc": 0}
    for _ in range(reps):
        a, b = rng.integers(0, len(final1), seeds), rng.integers(0, len(final1), seeds)
        hits["final_best"] += mannwhitneyu(final2[b], final1[a], alternative="less").pvalue < 0.05
        hits["auc"] += mannwhitneyu(auc2[b], auc1[a], alternative="less").pvalue < 0.05
    return {k: v / reps for k, v in hits.items()}


def _quartiles(values: Sequence[float]) -> dict[str, float]:
    a = np.sort(np.asarray(values, dtype=float))
    if not len(a):
        return {}
    pick = {"median": 0.5, "q25": 0.25, "q75": 0.75}
    return {k: float(a[int(round(q * (len(a) - 1)))]) for k, q in pick.items()}


def _rank(values: Sequence[float]) -> list[float]:
    from scipy.stats import rankdata

    return list(rankdata(values, method="average"))


def report(
    budget_fte: float, tag: str = "", kind: str = "surrogate", also_fte: float | None = None
) -> dict[str, Any]:
    """The tables and plot at `budget_fte`. `also_fte`: add the strategies recorded only at that larger
    budget, read up to this one: a strategy whose decisions do not depend on the budget (all but the
    scaled start-up) runs the same up to this budget in a longer run, where only its stop differs."""
    runs = load_runs(budget_fte, tag)
    if also_fte is not None:
        longer = load_runs(also_fte, tag)
        budget_free = {n: rs for n, rs in longer.items() if not n.startswith("tpe_asha_scaled")}
        runs.update({n: rs for n, rs in budget_free.items() if n not in runs})
    if not runs:
        raise SystemExit(f"no replay results for {budget_fte:g} FTE (tag {tag!r}) in {RESULTS_DIR}")
    ref = reference(budget_fte, kind=kind)
    result = analyse(runs, ref, budget_fte)
    seeds = min(s["seeds"] for s in result["strategies"].values())
    result["power"] = {str(n): power(ref, budget_fte, n) for n in sorted({10, 30, seeds})}
    result["comparisons"] = comparisons(result)
    name = f"analysis@{budget_fte:g}fte{'-' + tag if tag else ''}{f'+{also_fte:g}' if also_fte else ''}"
    out = RESULTS_DIR / f"{name}.json"
    out.write_text(json.dumps(result, indent=1, default=float))
    print(markdown(result, budget_fte))
    suffix = (f"-{tag}" if tag else "") + ("" if budget_fte == 96 else f"-{budget_fte:g}fte")
    plot(runs, ref, budget_fte, PLOT.with_name(f"{PLOT.stem}{suffix}.png"))
    return result


def markdown(result: dict[str, Any], budget_fte: float) -> str:
    lines = [
        f"f* {result['f_star']:.4f}, median configuration {result['f_median']:.4f}, random search's median "
        f"final best at {budget_fte:g} FTE (Monte Carlo) {result['random_target']:.4f}",
        "",
        f"| strategy | seeds | best at 24 / 48 / 96 FTE (median) | regret at {budget_fte:g}, median (IQR) "
        "| AUC, median "
        "(IQR) | random-equivalent budget | compute to reach random's median (IQR) | <= 25% in | mean rank "
        "| pretraining share | trials (reusing) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in sorted(result["strategies"].items(), key=lambda kv: kv[1]["auc"]["median"]):
        b = " / ".join(f"{s['best_at'][k]['median']:.3f}" for k in ("24", "48", "96") if k in s["best_at"])
        reg, auc, reb, reach = (
            s["regret_at"].get(f"{budget_fte:g}", {}),
            s["auc"],
            s["random_equivalent"],
            s["reach_random_median"],
        )
        lines.append(
            f"| {name} | {s['seeds']} | {b} | {reg.get('median', math.nan):.3f} "
            f"({reg.get('q25', math.nan):.3f}-"
            f"{reg.get('q75', math.nan):.3f}) | {auc['median']:.3f} ({auc['q25']:.3f}-{auc['q75']:.3f}) | "
            f"{_x(reb['median'])} ({_x(reb['q25'])}-{_x(reb['q75'])}) | {_pct(reach['median'])} "
            f"({_pct(reach['q25'])}-{_pct(reach['q75'])}) | {100 * reach['le_25pct']:.0f}% | "
            f"{_rank_text(s['mean_rank'])} | {100 * s['pretrain_share']['median']:.0f}% | "
            f"{s['trials']['median']:.0f} ({s['reusing_trials']['median']:.0f}) |"
        )
    if result.get("comparisons"):
        lines += ["", "| a | b | AUC a / b (p) | compute to reach a / b (p) | final best a / b (p) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for c in result["comparisons"]:
            cells = [
                f"{_fmt(m, c[m]['median_a'])} / {_fmt(m, c[m]['median_b'])} ({c[m]['p']:.3f})"
                for m in ("auc", "reach", "final")
            ]
            lines.append(f"| {c['a']} | {c['b']} | " + " | ".join(cells) + " |")
    if "power" in result:
        lines.append("")
        lines.append(
            "Power to tell random search at twice the budget from random search "
            "(one-sided Mann-Whitney, 5%): "
            + "; ".join(
                f"{n} seeds: final best {p['final_best']:.2f}, AUC {p['auc']:.2f}"
                for n, p in result["power"].items()
            )
        )
    return "\n".join(lines)


def _rank_text(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _fmt(measure: str, v: float) -> str:
    return _pct(math.inf if v >= 1e9 else v) if measure == "reach" else f"{v:.3f}"


def _x(v: float) -> str:
    return "beyond 32x" if math.isinf(v) else f"{v:.2f}x"


def _pct(v: float) -> str:
    return "not reached" if math.isinf(v) else f"{100 * v:.0f}%"


def plot(runs: dict[str, list[dict[str, Any]]], ref: Reference, budget_fte: float, path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    grid = ref.grid_fte[ref.grid_fte <= budget_fte]
    rand = np.median(regret(ref.random_best[:, : len(grid)], ref), axis=0)
    ax.plot(
        grid,
        rand,
        color="black",
        lw=1.2,
        ls="--",
        label="random search, no early stopping (Monte Carlo median)",
    )
    for name, rs in sorted(runs.items()):
        fte = rs[0]["fte_seconds"]
        reg = regret(np.array([best_at(r, grid * fte) for r in rs]), ref)
        med = np.median(reg, axis=0)
        (line,) = ax.plot(
            grid, med, lw=1.3, ls="-" if "share" in name else ":", label=f"{name} ({len(rs)} seeds)"
        )
        ax.fill_between(grid, np.quantile(reg, 0.25, axis=0), np.quantile(reg, 0.75, axis=0),
                        color=line.get_color(), alpha=0.08)  # fmt: skip
    ax.set_xlabel("compute spent (full-trial equivalents; pretraining ~85% of an ASHA trial)")
    ax.set_ylabel("normalized regret of the best full-length trial")
    ax.set_ylim(0, 1.02)
    ax.set_title(
        "Strategies on the curve-table surrogate through ecgtune's driver (median, IQR)", fontsize=10
    )
    ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")

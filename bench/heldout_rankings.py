"""Does the surrogate rank search strategies as recorded rows do? `python -m bench.surrogate rankings`.

Strategies are replayed twice on the same held-out rows (`bench.surrogate split`): once with the curves
a surrogate fitted on the other rows predicts, once with the recorded curves. A seed's random stream is
the same on both, so run i of a strategy on one side and run i on the other are a pair. Three readings
of the two sides, from weakest to strongest:

- Kendall's tau between the two orderings of the strategies' medians (says little when the medians
  lie within the noise);
- per pair of strategies, each side's own test (two-sided Mann-Whitney): the sides disagree only where
  both resolve a pair in opposite directions (`pair_verdict`);
- per pair, how much more one side separates the two strategies than the other does, with a paired
  bootstrap interval (`side_difference`): the surrogate ranks the pair as the rows do, up to `margin`,
  when the whole 90% interval lies within +-margin (two one-sided tests at 5%). The default margin is
  the table's training noise, the median SD of a configuration's final objective over three training
  seeds: a difference smaller than that is one the recorded rows would not keep on retraining, and
  docs/benchmarks.md part 4 claims none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EQUIVALENCE_LEVEL = 0.90  # a 90% interval inside +-margin: two one-sided tests at 5%


def pair_verdict(p_first: float, p_second: float, same_direction: bool, alpha: float = 0.05) -> str:
    """Two blackboxes' verdicts on one pair of strategies: they disagree only when both resolve the pair
    (p < alpha) in opposite directions."""
    resolved = (p_first < alpha, p_second < alpha)
    if all(resolved):
        return "agree" if same_direction else "disagree"
    return "resolved on one only" if any(resolved) else "unresolved"


def side_difference(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    level: float = EQUIVALENCE_LEVEL,
    draws: int = 4000,
    seed: int = 0,
) -> dict[str, float]:
    """[median(a1) - median(b1)] - [median(a2) - median(b2)]: how much further the first blackbox puts
    strategy a from b than the second does, with a percentile bootstrap interval at `level`.

    `a` = (a's runs on blackbox 1, the same seeds' runs on blackbox 2), element i of both one seed; `b`
    likewise. A draw resamples a's seeds and b's seeds and takes each drawn seed on both blackboxes, so
    what a seed does on both (an easy or a hard draw of the space) cancels."""
    rng = np.random.default_rng(seed)
    (a1, a2), (b1, b2) = a, b
    ia = rng.integers(0, len(a1), (draws, len(a1)))
    ib = rng.integers(0, len(b1), (draws, len(b1)))

    def gap(x1, x2, y1, y2):
        med = lambda v: np.median(v, axis=-1)  # noqa: E731
        return (med(x1) - med(y1)) - (med(x2) - med(y2))

    boot = gap(a1[ia], a2[ia], b1[ib], b2[ib])
    low, high = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return {"point": float(gap(a1, a2, b1, b2)), "low": float(low), "high": float(high)}


def equivalence_verdict(low: float, high: float, margin: float) -> str:
    return "same within margin" if -margin < low and high < margin else "not shown within margin"


def table_noise_margin() -> float:
    """The median SD of one configuration's final objective over its three training seeds."""
    from bench.curve_table import TABLE_FILE, CurveTable, noise_sd

    return noise_sd(CurveTable(TABLE_FILE))["median_sd"]


def _measures(runs: dict[str, list[tuple[int, dict[str, Any]]]], budget_fte: float) -> dict[str, Any]:
    """Per strategy: the runs' keys (part, seed), final best and area under the best-so-far curve."""
    from bench.replay_analysis import best_at

    grid_fte = np.linspace(0, budget_fte, 97)[1:]
    curves = {name: np.array([best_at(r, grid_fte * r["fte_seconds"]) for _, r in rs])
              for name, rs in runs.items()}  # fmt: skip
    worst = max(float(c[np.isfinite(c)].max()) for c in curves.values())
    return {
        "keys": {n: [(part, r.get("seed", i)) for i, (part, r) in enumerate(rs)] for n, rs in runs.items()},
        "final": {n: c[:, -1] for n, c in curves.items()},
        "auc": {n: np.where(np.isfinite(c), c, worst).mean(axis=1) for n, c in curves.items()},
    }


def _paired(first: dict[str, Any], second: dict[str, Any], measure: str, name: str):
    """A strategy's runs on both blackboxes, matched by (part, seed); runs on one side only left out."""
    at = {k: i for i, k in enumerate(second["keys"][name])}
    pairs = [(i, at[k]) for i, k in enumerate(first["keys"][name]) if k in at]
    i1, i2 = (np.array(ix, dtype=int) for ix in zip(*pairs, strict=True)) if pairs else ([], [])
    return first[measure][name][i1], second[measure][name][i2]


def rankings(
    tags: tuple[str, str] = ("heldout-predicted", "heldout-recorded"),
    budget_fte: float = 24,
    margin: float | None = None,
) -> dict[str, Any]:
    """The strategies' ranking on two blackboxes (by default the held-out rows with predicted curves and
    with recorded ones, see `bench.surrogate.split`) by two measures: the median final best, and the
    median area under the best-so-far curve over the budget (before a run's first full trial: the worst
    value any run of that blackbox reached). The area ranks strategies as the normalized regret's AUC
    does (an affine map of it, per blackbox) and separates them better (docs/benchmarks.md part 4). A
    tag `a+b` pools the runs of two tags (two held-out folds: each strategy has the same seeds on each,
    so pooling adds the same between-fold spread to every strategy). See the module docstring for the
    three readings."""
    from scipy.stats import kendalltau, mannwhitneyu

    from bench.replay_analysis import load_runs

    margin = table_noise_margin() if margin is None else margin
    by_tag = {}
    for tag in tags:
        runs: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for part, sub in enumerate(tag.split("+")):  # `a+b`: two tags' runs pooled, e.g. two held-out folds
            for name, rs in load_runs(budget_fte, sub).items():
                runs.setdefault(name, []).extend((part, r) for r in rs)
        by_tag[tag] = _measures(runs, budget_fte)
    first, second = (by_tag[t] for t in tags)
    names = sorted(set(first["final"]) & set(second["final"]))
    out: dict[str, Any] = {
        "budget_fte": budget_fte,
        "margin": margin,
        "seeds": {t: {n: len(v) for n, v in by_tag[t]["final"].items()} for t in tags},
    }
    for measure in ("final", "auc"):
        medians = {t: {n: float(np.median(by_tag[t][measure][n])) for n in names} for t in tags}
        for tag in tags:
            order = sorted(names, key=lambda n: medians[tag][n])
            print(f"{measure:>5} on {tag}: " + " < ".join(f"{n} ({medians[tag][n]:.3f})" for n in order))
        tau = kendalltau([medians[tags[0]][n] for n in names], [medians[tags[1]][n] for n in names]).statistic
        print(f"Kendall's tau by {measure} between the two rankings of {len(names)} strategies: {tau:.2f}")
        pairs = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                side = {}
                for tag in tags:
                    x, y = by_tag[tag][measure][a], by_tag[tag][measure][b]
                    side[tag] = {"a_better": bool(np.median(x) < np.median(y)),
                                 "p": float(mannwhitneyu(x, y, alternative="two-sided").pvalue)}  # fmt: skip
                verdict = pair_verdict(*(side[t]["p"] for t in tags),
                                       side[tags[0]]["a_better"] == side[tags[1]]["a_better"])  # fmt: skip
                pa, pb = _paired(first, second, measure, a), _paired(first, second, measure, b)
                diff = side_difference(pa, pb) if len(pa[0]) and len(pb[0]) else None
                if diff is not None:
                    diff["verdict"] = equivalence_verdict(diff["low"], diff["high"], margin)
                pairs.append({"a": a, "b": b, "verdict": verdict, **side, "difference": diff})
                shown = "no paired seeds" if diff is None else (
                    f"difference {diff['point']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]: "
                    f"{diff['verdict']}"
                )  # fmt: skip
                print(f"   {a} vs {b}: " + ", ".join(
                    f"{t} {'<' if side[t]['a_better'] else '>'} (p {side[t]['p']:.2f})" for t in tags
                ) + f": {verdict}; {shown}")  # fmt: skip
        bounds = [max(-p["difference"]["low"], p["difference"]["high"]) for p in pairs if p["difference"]]
        within = sum(p["difference"] is not None and p["difference"]["verdict"] == "same within margin"
                     for p in pairs)  # fmt: skip
        largest = max(bounds, default=float("nan"))
        print(f"{measure}: {within} of {len(pairs)} pairs the same within +-{margin:.3f} "
              f"({EQUIVALENCE_LEVEL:.0%} intervals; largest bound {largest:.3f})")  # fmt: skip
        out[measure] = {"tau": float(tau), **medians, "pairs": pairs, "same_within_margin": within,
                        "largest_bound": largest}  # fmt: skip
    return out

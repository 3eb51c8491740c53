"""The report's PNG plots, one function per figure; a figure that cannot be drawn says why instead."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ecgtune.experiment import Experiment
from ecgtune.experiment.reader import mae_column
from ecgtune.report.cells import best_at_highest_fidelity, choice_index, from_cell, unique
from ecgtune.targets import TARGETS


def write_plots(
    exp: Experiment, importances: Mapping[str, Mapping[str, float]], out: Path, top_k: int
) -> tuple[list[Path], list[str]]:
    paths: list[Path] = []
    notes: list[str] = []
    makers = [
        ("best_objective.png", _plot_best_objective),
        ("top_trials_mae.png", lambda e: _plot_top_mae(e, top_k)),
        ("asha_rungs.png", _plot_rungs),
        ("importance.png", lambda e: _plot_importance(importances)),
    ]
    makers += [(f"slice_{_safe(p)}.png", lambda e, p=p: _plot_slice(e, p)) for p in exp.sampled]
    for name, make in makers:
        try:
            fig = make(exp)
        except Exception as exc:  # one broken plot must not lose the report; say what happened
            notes.append(f"plot {name}: failed ({exc.__class__.__name__}: {exc})")
            continue
        if isinstance(fig, str):
            notes.append(f"plot {name}: {fig}")
            continue
        fig.savefig(out / name, dpi=100)
        paths.append(out / name)
    return paths, notes


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _figure(ncols: int = 1, width: float = 8.0, height: float = 4.5) -> Any:
    # A bare Figure renders PNGs with Agg and leaves pyplot's global backend and figure list alone.
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)


def _epoch_colours(exp: Experiment) -> dict[str, float]:
    """One colour scale for epochs reached in every plot: 1 to full fidelity."""
    return {"vmin": 1, "vmax": max(exp.max_epochs, 2)}


def _epoch_colourbar(fig: Any, mappable: Any, ax: Any) -> None:
    bar = fig.colorbar(mappable, ax=ax, label="epochs reached")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_best_objective(exp: Experiment) -> Any:
    t = exp.trials[exp.trials["objective_last"].notna()].copy()
    if not len(t):
        return "no results yet"
    t = t.sort_values("started", na_position="last")
    t0 = t["started"].min()
    t["minutes"] = (t["ended"] - t0) / 60.0
    t["number"] = np.arange(1, len(t) + 1)
    fig, axes = _figure(2, width=11)
    for ax, x, xlabel in (
        (axes[0][0], "minutes", "wall-clock minutes since the first trial started"),
        (axes[0][1], "number", "trial (in order of start)"),
    ):
        sc = ax.scatter(
            t[x], t["objective_last"], c=t["epochs"], cmap="viridis", s=25, zorder=3, **_epoch_colours(exp)
        )
        full = t[t["full_fidelity"]].sort_values(x)
        if len(full):
            ax.step(
                full[x],
                full["objective_last"].cummin(),
                where="post",
                color="C3",
                label="best full-fidelity so far",
            )
            ax.legend(loc="upper right")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("objective (last epoch, lower is better)")
        ax.grid(alpha=0.3)
    _epoch_colourbar(fig, sc, axes[0][1])
    fig.suptitle(f"{exp.name}: objective per trial (points) and best full-fidelity objective so far")
    return fig


def _plot_top_mae(exp: Experiment, top_k: int) -> Any:
    t = exp.trials
    pool = t[t["full_fidelity"] & t["objective_last"].notna()]
    label = "full-fidelity"
    if not len(pool):
        best = best_at_highest_fidelity(t)
        if best is None:
            return "no results yet"
        pool = t[(t["epochs"] == best["epochs"]) & t["objective_last"].notna()]
        label = f"{best['epochs']}-epoch (none finished yet)"
    top = pool.sort_values("objective_last").head(top_k)
    fig, axes = _figure(len(exp.targets), width=3.2 * len(exp.targets) + 1)
    for ax, x in zip(axes[0], exp.targets, strict=True):
        target = TARGETS[x]
        ax.bar(top["trial_id"], top[mae_column(x)], color="C0")
        ax.axhline(target.tolerance, color="C3", ls="--", label=f"tolerance {target.tolerance:g}")
        if exp.baseline is not None and x in exp.baseline:
            ax.axhline(exp.baseline[x], color="0.4", ls=":", label="training mean")
        ax.set_title(f"{target.title} MAE ({target.unit})")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"PTB-XL validation MAE of the top {len(top)} {label} trials (last epoch)")
    return fig


def _plot_rungs(exp: Experiment) -> Any:
    t = exp.trials.sort_values("started", na_position="last")
    fig, axes = _figure(width=max(8.0, 0.25 * len(t) + 3))
    ax = axes[0][0]
    colours = {"finished": "C2", "stopped": "C1", "diverged": "C4", "error": "C3", "running": "C0"}
    for status, colour in colours.items():
        sel = t["status"] == status
        if sel.any():
            ax.bar(np.flatnonzero(sel.to_numpy()), t.loc[sel, "epochs"], color=colour, label=status)
    for e in sorted(set(t["epochs"]) - {0}):
        ax.axhline(e, color="0.7", lw=0.8, zorder=0)
    ax.set_xticks(range(len(t)), t["trial_id"], rotation=60, fontsize=7)
    ax.set_ylabel("epochs reached")
    ax.set_ylim(0, max(exp.max_epochs, 1) * 1.05)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.set_title(f"{exp.name}: epochs each trial reached (ASHA rungs; full fidelity = {exp.max_epochs})")
    return fig


def _plot_importance(importances: Mapping[str, Mapping[str, float]]) -> Any:
    if not importances:
        return "no importance computed (see notes)"
    names = sorted({k for v in importances.values() for k in v})
    fig, axes = _figure(width=8, height=1.0 + 0.5 * len(names) * len(importances))
    ax = axes[0][0]
    height = 0.8 / len(importances)
    for i, (label, imp) in enumerate(importances.items()):
        ax.barh(np.arange(len(names)) + i * height, [imp.get(n, 0.0) for n in names], height, label=label)
    ax.set_yticks(np.arange(len(names)) + 0.4 - height / 2, names)
    ax.set_xlabel("fANOVA importance (share of objective variance)")
    ax.legend(fontsize=8)
    return fig


def _plot_slice(exp: Experiment, param: str) -> Any:
    t = exp.trials[exp.trials["objective_last"].notna()]
    space = exp.spec.search.space if exp.spec is not None and exp.spec.search is not None else {}
    dist = space.get(param)
    values = [from_cell(v) for v in t[param]]
    if dist is not None:
        numeric = dist.type in ("int", "float")
    else:
        numeric = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None
        )
    fig, axes = _figure(width=7)
    ax = axes[0][0]
    if numeric:
        x = np.array([np.nan if v is None else float(v) for v in values])
        if dist is not None and dist.log:
            ax.set_xscale("log")
        if dist is not None and dist.type == "int":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        choices = list(dist.choices) if dist is not None and dist.choices else unique(values)
        x = np.array([np.nan if (i := choice_index(choices, v)) is None else i for v in values], dtype=float)
        ax.set_xticks(range(len(choices)), [str(c) for c in choices])
    if np.isnan(x).all():
        return "no trial with a result and this parameter"
    sc = ax.scatter(x, t["objective_last"], c=t["epochs"], cmap="viridis", s=30, **_epoch_colours(exp))
    _epoch_colourbar(fig, sc, ax)
    ax.set_xlabel(param)
    ax.set_ylabel("objective (last epoch)")
    ax.grid(alpha=0.3)
    ax.set_title(f"{param}: objective of each trial at the epochs it reached")
    return fig

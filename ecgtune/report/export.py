"""The best full-fidelity trial of an experiment as a standalone training config."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from ecgtune.experiment import ExperimentError, read_experiment, trial_spec
from ecgtune.paths import check_new_file


def export_best(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """Write the best full-fidelity trial of an experiment as a standalone training config.

    "Best" = lowest last-epoch objective among trials that trained every planned epoch; trials
    ASHA stopped are never chosen, since their value is from fewer epochs. The result is a
    complete Spec (model, every hyperparameter, data, targets, stages, seed) without `search`,
    that `ecgtune train` runs as is; `origin` records where it came from.
    """
    from ecgtune import __version__
    from ecgtune.spec import dump_spec

    out = check_new_file(out)
    experiment = read_experiment(path)
    if experiment.spec is None:
        raise ExperimentError(f"{path}: no spec found (spec.yaml or a trial's params.json); cannot export")
    finished = experiment.trials[
        (experiment.trials["status"] == "finished") & experiment.trials["full_fidelity"]
    ]
    finished = finished.dropna(subset=["objective_last"])
    if finished.empty:
        raise ExperimentError(
            f"{path}: no trial has trained every planned epoch yet ({len(experiment.trials)} trials); "
            "nothing to export — wait for the sweep, or lower ASHA's aggressiveness"
        )
    best = finished.sort_values("objective_last").iloc[0]
    spec, tid = experiment.spec, str(best["trial_id"])
    # The values the searcher gave, as JSON (params.json, else the driver's summary), never table cells.
    config = experiment.configs.get(tid) or _summary_config(experiment.summary, tid)
    try:
        config = trial_spec(spec, config)
    except ValueError as exc:
        raise ExperimentError(
            f"{path}: trial {tid}'s config does not apply to the sweep's spec: {exc}"
        ) from None
    origin = {
        "experiment": str(path),
        "trial_id": tid,
        "metric": "objective (PTB-XL validation, mean MAE / tolerance)",
        "value": float(best["objective_last"]),
        "epochs": int(best["epochs"]),
        "ecgtune_version": __version__,
        "git_commit": _git_commit(),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    config = config.model_copy(update={"origin": origin, "name": f"{spec.name}-best"})
    out.parent.mkdir(parents=True, exist_ok=True)
    check_new_file(out)  # again: the file may have appeared meanwhile
    dump_spec(config, out)
    return out, origin


def _summary_config(summary: dict[str, Any] | None, trial_id: str) -> dict[str, Any]:
    """A trial's config as summary.json holds it ({} where it holds none)."""
    trials = (summary or {}).get("trials") or []
    return next((t.get("config") or {} for t in trials if t and str(t.get("trial_id")) == trial_id), {})


def _git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (res.stdout.strip() or None) if res.returncode == 0 else None

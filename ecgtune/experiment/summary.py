"""summary.json's content: every trial's outcome by the one status rule, and the best full-fidelity
trial. The driver gathers the facts from Tune (`ecgtune.search.summarize`) and writes the result with
`ecgtune.experiment.write_summary`; the reader takes each trial's verdict and config from it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from ecgtune.experiment.results import (
    EPOCH,
    MAE_KEY,
    MODE,
    OBJECTIVE,
    STATUSES,
    finite_objective,
    trial_status,
)
from ecgtune.spec import Spec


def trial_summary(
    spec: Spec,
    last: Mapping[str, Any],
    *,
    path: str,
    config: Mapping[str, Any],
    error: str | None,
    best_objective: float | None,
) -> dict[str, Any]:
    """One trial's entry of summary.json: `last` its last result, `error` its error in one line (None:
    it did not end in an error), `best_objective` the lowest objective it reported."""
    return {
        "trial_id": last.get("trial_id"),
        "path": path,
        "config": {k: v for k, v in config.items() if k != "spec"},
        "epochs": int(last.get(EPOCH, 0)),
        # Variants of one sweep can differ in length: each trial is measured against the
        # total_epochs its own results carry; the sweep's plan only where they carry none.
        "status": trial_status(last, max_epochs=spec.total_epochs, errored=error is not None),
        "error": error,
        # None, not NaN, for a diverged trial: summary.json stays standard JSON.
        "objective": finite_objective(last),
        "best_objective": finite_objective({OBJECTIVE: best_objective}),
        "ptbxl_val_mae": {t: last.get(MAE_KEY.format(t)) for t in spec.targets},
        "node_id": last.get("node_id"),
        "device": last.get("device"),
        "time_total_s": last.get("time_total_s"),
    }


def sweep_summary(
    spec: Spec, trials: list[dict[str, Any]], optuna_states: dict[str, int] | None, wall_seconds: float
) -> dict[str, Any]:
    """summary.json: the trials' entries (`trial_summary`), their counts, and the best finished trial."""
    finished = [t for t in trials if t["status"] == "finished" and t["objective"] is not None]
    best = min(finished, key=lambda t: t["objective"]) if finished else None
    per_rung = Counter(t["epochs"] for t in trials)
    return {
        "sweep": spec.name,
        "metric": OBJECTIVE,
        "mode": MODE,
        "max_epochs": spec.total_epochs,
        "wall_seconds": wall_seconds,
        "trials": trials,
        "epochs_reached": {str(k): v for k, v in sorted(per_rung.items())},
        "statuses": {s: sum(t["status"] == s for t in trials) for s in STATUSES},
        "best": best,
        "optuna_states": optuna_states,
    }

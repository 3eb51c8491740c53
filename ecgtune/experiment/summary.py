"""summary.json's content: every trial's outcome by the one status rule, and the best full-fidelity
trial. The driver gathers the facts from Tune (`ecgtune.sweep_results.summarize`) and writes the result with
`ecgtune.experiment.write_summary`; the reader takes each trial's verdict and config from it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from ecgtune.experiment.results import (
    BACKBONE_FROM,
    BACKBONE_KEY,
    BACKBONE_ORIGIN,
    EPOCH,
    MAE_KEY,
    MODE,
    OBJECTIVE,
    SAVED_SECONDS,
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
    pretrain_epochs: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """One trial's entry of summary.json: `last` its last result, `error` its error in one line (None:
    it did not end in an error), `best_objective` the lowest objective it reported, `pretrain_epochs`
    (trained here, reported): the pretraining epochs it trained itself, and all it reported (reused ones
    included)."""
    backbone = None
    if last.get(BACKBONE_ORIGIN):
        backbone = {
            "origin": last.get(BACKBONE_ORIGIN),
            "key": last.get(BACKBONE_KEY),
            "from": last.get(BACKBONE_FROM),
            "saved_seconds": last.get(SAVED_SECONDS) or 0.0,
            "pretrain_epochs_trained": pretrain_epochs[0],
            "pretrain_epochs_needed": pretrain_epochs[1],
        }
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
        # "pretrained" or "reused KEY from trial X (sweep Y)": `describe_backbone`
        "backbone": backbone,
    }


def describe_backbone(backbone: Mapping[str, Any] | None) -> str:
    """A trial's backbone in words, for the console, summary and report."""
    if not backbone:
        return "-"
    if backbone["origin"] == "reused":
        return f"reused {backbone['key']} from {backbone['from']}"
    return f"pretrained {backbone['key']}"


def sweep_summary(
    spec: Spec,
    trials: list[dict[str, Any]],
    optuna_states: dict[str, int] | None,
    wall_seconds: float,
    sharing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """summary.json: the trials' entries (`trial_summary`), their counts, the best finished trial, and
    what the backbone store saved (`sharing`: the searcher's count of backbones and reuses)."""
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
        "backbones": backbone_totals(spec, trials, sharing),
    }


def backbone_totals(
    spec: Spec, trials: list[dict[str, Any]], sharing: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Trials that pretrained and that reused a backbone, pretraining epochs trained against those the
    trials needed (what they would have trained without the store), and the seconds of pretraining saved
    (what the reused backbones' pretraining took where it ran)."""
    entries = [t["backbone"] for t in trials if t.get("backbone")]
    if not entries:
        return None
    return {
        "store": spec.run.backbones,
        "pretrained": sum(b["origin"] == "pretrained" for b in entries),
        "reused": sum(b["origin"] == "reused" for b in entries),
        "pretrain_epochs_trained": sum(b["pretrain_epochs_trained"] for b in entries),
        "pretrain_epochs_needed": sum(b["pretrain_epochs_needed"] for b in entries),
        "saved_seconds": sum(b["saved_seconds"] for b in entries if b["origin"] == "reused"),
        "searcher": sharing,
    }


def sweep_failure(summary: Mapping[str, Any]) -> str | None:
    """Why a sweep failed, in one line, or None when it produced what a sweep is for: a trial trained
    through every epoch. `ecgtune sweep` exits non-zero on it, so a `ray job submit` of it reads FAILED
    (Tune's fit() returns normally even when every trial errored)."""
    trials = summary.get("trials", [])
    errored = [t for t in trials if t.get("status") == "error"]
    if trials and len(errored) == len(trials):
        first = errored[0].get("error") or "no error message"
        return f"sweep {summary.get('sweep')} failed: all {len(trials)} trials errored (first: {first})"
    if not any(t.get("status") == "finished" for t in trials):
        counts = ", ".join(f"{n} {s}" for s, n in (summary.get("statuses") or {}).items() if n) or "no trials"
        return f"sweep {summary.get('sweep')} failed: no trial trained every epoch ({counts})"
    return None


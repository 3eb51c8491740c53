"""What a trial reports each epoch, and what its last report means: finished / stopped / diverged /
error / running, decided in one place.

The sweep summary (`ecgtune.sweep_results.summarize`), the dashboard series
(`ecgtune.sweep_callbacks.SweepGauges`), the console lines (`ecgtune.sweep_callbacks.ProgressLines`),
the searcher's verdict to Optuna (`ecgtune.searchers.PruneAwareOptunaSearch`) and the reader of an
experiment directory (`ecgtune.experiment.reader`) all call `trial_status`; each only gathers the
facts it has (the last result, whether the trial errored, whether it has ended).

No Ray here. The result keys are the ones `ecgtune.stages.TwoStageRun.step` reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

# Keys of one epoch's result (ecgtune.stages.TwoStageRun.step). The objective is minimised.
OBJECTIVE, EPOCH, TOTAL_EPOCHS = "objective", "epoch", "total_epochs"
MODE = "min"
# Per-target MAE on the PTB-XL validation fold, in the target's unit: MAE_KEY.format("hr").
MAE_KEY = "ptbxl_val_mae_{}"
# True on the epoch whose training loss or objective stopped being finite; that epoch's objective is NaN.
DIVERGED = "diverged"
# Backbone reuse (`ecgtune.reuse`). REUSED_EPOCH: True on a pretraining epoch this trial did not train
# but took, with its metrics, from the backbone store. Every result of a trial that pretrains carries
# BACKBONE_KEY and BACKBONE_ORIGIN ("pretrained": it trained the backbone itself; "reused": it loaded
# it), and a reused one BACKBONE_FROM (the trial and sweep that pretrained it) and SAVED_SECONDS (the
# pretraining seconds that trial spent and this one did not).
REUSED_EPOCH = "reused_epoch"
BACKBONE_KEY, BACKBONE_ORIGIN, BACKBONE_FROM = "backbone_key", "backbone", "backbone_from"
SAVED_SECONDS = "backbone_saved_seconds"

STATUSES = ("finished", "stopped", "diverged", "error", "running")
STATUS_MEANING = {
    "finished": "trained every epoch",
    "stopped": "stopped early by ASHA (or by the sweep's end)",
    "diverged": "its training loss or objective stopped being finite (NaN/inf): ended at once, never ranked",
    "error": "failed (error.txt)",
    "running": "no final result yet: still running, or its sweep was interrupted",
}


def truthy(value: Any) -> bool:
    """A flag as read from a result dict or a pandas row: absent, None or NaN (a column other rows
    have) is False."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def is_diverged(result: Mapping[str, Any] | None) -> bool:
    """The result says the trial diverged: the flag, or an objective that is a number but not finite.

    The second catches a non-finite objective that reached a result without the flag (an older
    ecgtune, another code path): it must never be ranked either.
    """
    if not result:
        return False
    if truthy(result.get(DIVERGED)):
        return True
    value = result.get(OBJECTIVE)
    return isinstance(value, Real) and not isinstance(value, bool) and not math.isfinite(value)


def trial_status(
    last: Mapping[str, Any] | None, *, max_epochs: int = 0, errored: bool = False, ended: bool = True
) -> str:
    """The status of a trial whose last reported result is `last` (None or empty: it reported none).

    `max_epochs`: the epochs it was meant to train, used when `last` carries no `total_epochs`
    (0: unknown). `errored`: it ended in an error. `ended`: it will report nothing more (Tune
    completed or stopped it, or the sweep is over).

    Precedence: diverged (its last result is unusable, whatever happened after) > finished (it
    trained its own epoch count, even after a failure it recovered from) > error > stopped > running.
    """
    last = last or {}
    if is_diverged(last):
        return "diverged"
    epochs = number(last.get(EPOCH)) or 0
    planned = number(last.get(TOTAL_EPOCHS)) or max_epochs
    if planned and epochs >= planned:
        return "finished"
    if errored:
        return "error"
    return "stopped" if ended else "running"


def finite_objective(result: Mapping[str, Any] | None) -> float | None:
    """The result's objective as a float, or None when it has none or it is not finite."""
    value = number((result or {}).get(OBJECTIVE))
    return value if value is not None and math.isfinite(value) else None


def number(value: Any) -> float | None:
    """A metric as a float; None for absent, None, NaN, a bool or a non-number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


__all__ = [
    "DIVERGED",
    "EPOCH",
    "MAE_KEY",
    "MODE",
    "OBJECTIVE",
    "STATUSES",
    "STATUS_MEANING",
    "TOTAL_EPOCHS",
    "finite_objective",
    "is_diverged",
    "number",
    "trial_status",
    "truthy",
]

"""What a sweep ended with, from Tune's ResultGrid: summary.json's content (`summarize`, through
`ecgtune.experiment.sweep_summary`) and the console's closing table (`format_summary`)."""

from __future__ import annotations

import re
from typing import Any

from ray import tune

from ecgtune.backbone_search import BackboneSharingSearch
from ecgtune.experiment import EPOCH, OBJECTIVE, REUSED_EPOCH, sweep_summary, trial_summary
from ecgtune.searchers import PruneAwareOptunaSearch
from ecgtune.spec import Spec
from ecgtune.targets import TARGETS, check_targets

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _error_message(error: BaseException) -> str:
    """A trial's error in one line: the trainable's own exception ("RuntimeError: ..."), not the
    `ray::ImplicitFunc.train() (pid=..., ip=...)` header, in ANSI colours, that starts a RayTaskError."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    # Others (a dead actor or node; a TuneError holding a traceback's text): their last line says what.
    lines = [line.strip() for line in _ANSI_ESCAPE.sub("", str(error)).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def summarize(
    results: tune.ResultGrid, spec: Spec, searcher: PruneAwareOptunaSearch | None, wall_seconds: float
) -> dict[str, Any]:
    """summary.json's content (`ecgtune.experiment.sweep_summary`) from Tune's results and the searcher."""
    trials = []
    for r in results:
        df = r.metrics_dataframe
        best_objective = float(df[OBJECTIVE].min()) if df is not None and OBJECTIVE in df else None
        error = _error_message(r.error) if r.error else None
        trials.append(
            trial_summary(
                spec,
                r.metrics or {},
                path=r.path,
                config=r.config or {},  # None for a trial the sweep ended before it started
                error=error,
                best_objective=best_objective,
                pretrain_epochs=_pretrain_epochs(df),
            )
        )
    states = searcher.study_states() if searcher is not None else None
    sharing = searcher.sharing_summary() if isinstance(searcher, BackboneSharingSearch) else None
    return sweep_summary(spec, trials, states, wall_seconds, sharing)


def _pretrain_epochs(df: Any) -> tuple[int, int]:
    """(pretraining epochs a trial trained itself, pretraining epochs it reported) from its results."""
    if df is None or "stage" not in df:
        return 0, 0
    pre = df[df["stage"] == "pretrain"].drop_duplicates(EPOCH, keep="last")
    reused = int(pre[REUSED_EPOCH].fillna(False).astype(bool).sum()) if REUSED_EPOCH in pre else 0
    return len(pre) - reused, len(pre)


def format_summary(summary: dict[str, Any], top: int = 5) -> str:
    targets = check_targets([t for t in TARGETS if any(t in tr["ptbxl_val_mae"] for tr in summary["trials"])])
    ranked = sorted(
        (t for t in summary["trials"] if t["objective"] is not None),
        key=lambda t: (t["status"] != "finished", t["objective"]),
    )[:top]
    head = f"{'trial':<14} {'status':<9} {'epochs':>6} {'objective':>9} " + " ".join(
        f"{TARGETS[t].title + ' ' + TARGETS[t].unit:>10}" for t in targets
    )
    lines = [
        f"sweep {summary['sweep']}: {len(summary['trials'])} trials in {summary['wall_seconds']:.0f} s",
        head,
    ]
    for t in ranked:
        maes = " ".join(f"{t['ptbxl_val_mae'][x]:>10.2f}" for x in targets)
        lines.append(f"{t['trial_id']!s:<14} {t['status']:<9} {t['epochs']:>6} {t['objective']:>9.3f} {maes}")
    lines.append(f"epochs reached (epochs: trials): {summary['epochs_reached']}")
    if summary.get("statuses"):
        lines.append("trials: " + ", ".join(f"{n} {s}" for s, n in summary["statuses"].items() if n))
    if summary.get("optuna_states"):
        lines.append(f"as told to TPE: {summary['optuna_states']}")
    for w in summary.get("warm_start") or []:
        lines.append(
            f"warm start: {w['trials']} trials ({w['complete']} finished, {w['pruned']} stopped) "
            f"of {w['run']}"
        )
    if b := summary.get("backbones"):
        lines.append(
            f"backbones: {b['pretrained']} trials pretrained, {b['reused']} reused one from the store "
            f"({b['store']}); pretraining epochs trained {b['pretrain_epochs_trained']} of "
            f"{b['pretrain_epochs_needed']} needed, {b['saved_seconds']:.0f} s of pretraining saved"
        )
    lines.append(
        "PTB-XL validation MAE; objective = mean(MAE / clinical tolerance); finished trials ranked first."
    )
    return "\n".join(lines)

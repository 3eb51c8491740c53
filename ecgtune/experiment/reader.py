"""An experiment directory as tables: one row per trial (trials.csv's columns) and one per trial and
epoch. Read from the files alone (`ecgtune.experiment.files`), never through Ray, so it works on a
laptop, on a sweep that is still running, and on one whose cluster is gone.

Every MAE is in the target's unit (`ecgtune.targets.TARGETS`) on the PTB-XL validation fold.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from ecgtune.experiment.files import TrialFiles, read_files
from ecgtune.experiment.results import (
    BACKBONE_FROM,
    BACKBONE_KEY,
    BACKBONE_ORIGIN,
    EPOCH,
    MAE_KEY,
    OBJECTIVE,
    REUSED_EPOCH,
    SAVED_SECONDS,
    STATUSES,
    TOTAL_EPOCHS,
    number,
    trial_status,
    truthy,
)
from ecgtune.models import PRESETS
from ecgtune.sampler import trial_params
from ecgtune.spec import Spec, apply_params, apply_variant
from ecgtune.targets import TARGET_NAMES, TARGETS, check_targets


def trial_spec(spec: Spec, config: Mapping[str, Any]) -> Spec:
    """The standalone training config of one trial: the sweep spec with the trial's config applied
    (its variant, or its searched values). Trials (`ecgtune.trial`), the reader and the export ask here."""
    if "variant" in config:
        return apply_variant(spec, config["variant"])
    return apply_params(spec, trial_params(spec.search.space if spec.search else {}, config))


@dataclass
class Experiment:
    """One sweep as read from its storage path.

    `trials`: one row per trial (the columns of trials.csv, see `TRIAL_COLUMNS_DOC`); `history`: one
    row per trial and epoch, the metrics of result.json (without the config) plus `trial_id`.
    `configs`: per trial id, its config as the searcher gave it (params.json: JSON types, not table cells).
    `params`: the searched parameters (columns of `trials`), in spec order; `sampled` those of them
    the searcher draws (not `same_as` copies). `baseline`: per-target MAE (and `objective`) of
    predicting the training mean; `floor`: the label-noise floor of the validation split
    (`ecgtune.baselines`). Neither is read from the directory: the report sets them.
    """

    path: str
    name: str
    spec: Spec | None
    trials: pd.DataFrame
    history: pd.DataFrame
    configs: dict[str, dict[str, Any]]
    params: tuple[str, ...]
    sampled: tuple[str, ...]
    targets: tuple[str, ...]
    ended: bool
    summary: dict[str, Any] | None = None
    baseline: dict[str, float] | None = None
    floor: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def max_epochs(self) -> int:
        return int(self.trials["max_epochs"].max()) if len(self.trials) else 0


TRIAL_COLUMNS_DOC = """\
trial_id, status (finished / stopped / diverged / error / running), epochs (reached), max_epochs,
full_fidelity, rank (among trials that reached the same number of epochs, by last objective; 1 is best),
variant (fixed experiments only), model, family, one column per searched parameter, objective_last,
objective_best, best_epoch, mae_<target>_<unit>_last and _best (best = at the epoch of the best
objective), backbone (pretrained / reused: where its pretrained backbone came from), backbone_key,
backbone_from (the trial and sweep that pretrained a reused one), pretrain_epochs_trained and
pretrain_epochs_reported (pretraining epochs trained here; reported, reused ones included), saved_s
(pretraining seconds a reuse saved), wall_s (training seconds, Tune's time_total_s), started / ended
(unix time), node_id, device, hostname, failures, error, dir (the trial directory)."""


def mae_column(target: str, which: str = "last") -> str:
    """The trial table's column of a target's MAE at the last or the best epoch: `mae_hr_bpm_last`."""
    return f"mae_{target}_{TARGETS[target].unit}_{which}"


def read_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read an experiment directory, finished or running, from a local path or a pyarrow URI.

    Raises FileNotFoundError when `path` is no directory and ExperimentError when it holds no trial.
    The spec is spec.yaml's, else the one every trial's params.json carries.
    """
    files = read_files(path)
    notes, raw, summary = files.notes, files.trials, files.summary
    spec_dict = files.spec
    if spec_dict is None:
        spec_dict = next((t.config["spec"] for t in raw if isinstance(t.config.get("spec"), dict)), None)
    spec = _validate_spec(spec_dict, notes)
    params, sampled = _param_names(spec, raw)
    history = _history(raw)
    targets = _targets(spec, history)
    summary_status = {str(t.get("trial_id")): t.get("status") for t in (summary or {}).get("trials", []) if t}
    trials = _trial_table(raw, history, spec, params, targets, summary_status, summary is not None)
    return Experiment(
        path=os.fspath(path),
        name=Path(files.root.rstrip("/")).name,
        spec=spec,
        trials=trials,
        history=history,
        configs={_trial_id(t): {k: v for k, v in t.config.items() if k != "spec"} for t in raw},
        params=params,
        sampled=sampled,
        targets=targets,
        ended=summary is not None,
        summary=summary,
        notes=notes,
    )


def _validate_spec(spec_dict: Any, notes: list[str]) -> Spec | None:
    if spec_dict is None:
        notes.append("no spec (no spec.yaml, no 'spec' in params.json): searched parameters guessed")
        return None
    try:
        # Schema only, as the trial itself reads it (ecgtune.trial.run_trial); the sweep checked the rest.
        return Spec.model_validate(spec_dict)
    except ValidationError as exc:
        notes.append(
            f"the experiment's spec does not validate with this ecgtune ({exc.error_count()} errors)"
        )
        return None


def _param_names(spec: Spec | None, raw: Sequence[TrialFiles]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Searched parameters: the spec's search-space keys, then any other key of a trial config.

    Optuna's own names for `divides` parameters (`model.num_heads|model.embed_dim=128`) are left out:
    the sampler's result (`model.num_heads`) is in the config beside them (`ecgtune.sampler.trial_params`).
    """
    space = spec.search.space if spec is not None and spec.search is not None else {}
    extra = sorted(
        {k for t in raw for k in t.config if k not in space and k not in ("spec", "variant") and "|" not in k}
    )
    params = (*space, *extra)
    sampled = tuple(k for k in params if k not in space or space[k].type != "same_as")
    return params, sampled


def _history(raw: Sequence[TrialFiles]) -> pd.DataFrame:
    rows = []
    for t in raw:
        tid = _trial_id(t)
        for r in t.results:
            if EPOCH in r:
                rows.append({**{k: v for k, v in r.items() if k != "config"}, "trial_id": tid})
    if not rows:
        return pd.DataFrame(columns=["trial_id", EPOCH, OBJECTIVE])
    df = pd.DataFrame(rows)
    # A trial restored from a checkpoint after a failure reports some epochs again: keep the latest.
    df = df.drop_duplicates(["trial_id", EPOCH], keep="last")
    return df.sort_values(["trial_id", EPOCH]).reset_index(drop=True)


# Tune's trial ids: 8 hex digits, or `<5 hex>_<5 digits>` (BasicVariantGenerator).
_TRIAL_ID = re.compile(r"(?:^|_)trial_([0-9a-f]{5}_\d{5}|[0-9a-f]{8})(?:_|$)")


def _trial_id(t: TrialFiles) -> str:
    for r in reversed(t.results):
        if r.get("trial_id"):
            return str(r["trial_id"])
    m = _TRIAL_ID.search(t.dir)
    return m.group(1) if m else t.dir


def _targets(spec: Spec | None, history: pd.DataFrame) -> tuple[str, ...]:
    seen = [t for t in TARGET_NAMES if MAE_KEY.format(t) in history.columns]
    if seen:
        return check_targets(seen)
    return check_targets(spec.targets) if spec is not None else TARGET_NAMES


def _own_spec(spec: Spec | None, config: Mapping[str, Any]) -> Spec | None:
    """The trial's own spec (`trial_spec`); the sweep's for a config that lacks searched values (a
    params.json that could not be read), None for an unknown variant or without a spec."""
    if spec is None:
        return None
    try:
        return trial_spec(spec, config)
    except ValueError:
        return None if "variant" in config else spec


def error_headline(text: str) -> tuple[int, str]:
    """(number of failures, the exception line of the last one) from a Tune error.txt.

    Tune appends `Failure # N (occurred at ...)` and the error's text per failure; that text starts
    with the actor's name and a traceback, so the useful line is the last unindented one.
    """
    blocks = re.split(r"^Failure # \d+ \(occurred at [^)]*\)\s*$", text, flags=re.M)
    failures = max(len(blocks) - 1, 1)
    lines = [ln.rstrip() for ln in blocks[-1].splitlines() if ln.strip()]
    unindented = [ln for ln in lines if not ln[0].isspace()]
    headline = (unindented or lines or ["(empty error.txt)"])[-1]
    return failures, headline[:300]


def _trial_table(
    raw: Sequence[TrialFiles],
    history: pd.DataFrame,
    spec: Spec | None,
    params: Sequence[str],
    targets: Sequence[str],
    summary_status: Mapping[str, Any],
    ended: bool,
) -> pd.DataFrame:
    by_trial = {tid: df for tid, df in history.groupby("trial_id", sort=False)} if len(history) else {}
    has_variants = any("variant" in t.config for t in raw)
    rows = []
    for t in raw:
        tid = _trial_id(t)
        h = by_trial.get(tid)
        last = h.iloc[-1] if h is not None else None
        objectives = h[OBJECTIVE].astype(float) if h is not None and OBJECTIVE in h else None
        best = h.loc[objectives.idxmin()] if objectives is not None and objectives.notna().any() else None
        own = _own_spec(spec, t.config)
        epochs = int(last[EPOCH]) if last is not None else 0
        # The epochs it was set to train: as it reported them, or, before its first report, its spec's.
        reported_total = _num(last, TOTAL_EPOCHS)
        max_epochs = int(reported_total) if reported_total is not None else own.total_epochs if own else 0
        failures, error = error_headline(t.error) if t.error is not None else (0, None)
        reported = summary_status.get(tid)
        status = trial_status(
            None if last is None else last.to_dict(),
            max_epochs=max_epochs,
            errored=error is not None or reported == "error",
            # Tune marks the last result of a trial the scheduler stopped `done`; the driver's summary
            # gives every trial a verdict.
            ended=(last is not None and truthy(last.get("done"))) or ended or reported in STATUSES,
        )
        model = str(t.config["model.name"]) if "model.name" in t.config else own.model.name if own else None
        row: dict[str, Any] = {
            "trial_id": tid,
            "status": status,
            "epochs": epochs,
            "max_epochs": max_epochs,
            "full_fidelity": bool(max_epochs and epochs >= max_epochs),
        }
        if has_variants:
            row["variant"] = t.config.get("variant")
        row |= {"model": model, "family": PRESETS[model][0] if model in PRESETS else model}
        row |= {p: t.config.get(p) for p in params}
        row |= {
            "objective_last": _num(last, OBJECTIVE),
            "objective_best": _num(best, OBJECTIVE),
            "best_epoch": int(best[EPOCH]) if best is not None else None,
        }
        for x in targets:
            row[mae_column(x, "last")] = _num(last, MAE_KEY.format(x))
            row[mae_column(x, "best")] = _num(best, MAE_KEY.format(x))
        started = _num(h.iloc[0], "timestamp") if h is not None else None
        if started is not None:  # the first epoch's report time minus that epoch's duration
            started -= _num(h.iloc[0], "time_this_iter_s") or 0.0
        row |= _backbone_cells(h, last)
        row |= {
            "wall_s": _num(last, "time_total_s"),
            "started": started,
            "ended": _num(last, "timestamp"),
            "node_id": last.get("node_id") if last is not None else None,
            "device": last.get("device") if last is not None else None,
            "hostname": last.get("hostname") if last is not None else None,
            "failures": failures,
            "error": error,
            "dir": t.dir,
        }
        rows.append(row)
    df = pd.DataFrame(rows)
    for p in params:  # as the searcher gave them: 8 stays 8 beside a trial that lacks the key
        df[p] = pd.Series([r[p] for r in rows], dtype=object)
    df["rank"] = df.groupby("epochs")["objective_last"].rank(method="min").astype("Int64")
    df["best_epoch"] = df["best_epoch"].astype("Int64")
    order = ["trial_id", "status", "epochs", "max_epochs", "full_fidelity", "rank"]
    df = df[order + [c for c in df.columns if c not in order]]
    return df.sort_values(["started", "trial_id"], na_position="last").reset_index(drop=True)


def _backbone_cells(h: pd.DataFrame | None, last: pd.Series | None) -> dict[str, Any]:
    """Where a trial's backbone came from (`ecgtune.reuse`): pretrained here or reused from the store,
    and its pretraining epochs trained here against those it reported (reused ones included)."""
    pre = h[h["stage"] == "pretrain"] if h is not None and "stage" in h else None
    reported = len(pre) if pre is not None else 0
    reused = int(pre[REUSED_EPOCH].map(truthy).sum()) if pre is not None and REUSED_EPOCH in pre else 0
    text = {k: last.get(k) if last is not None and isinstance(last.get(k), str) else None
            for k in (BACKBONE_ORIGIN, BACKBONE_KEY, BACKBONE_FROM)}  # fmt: skip
    return {
        "backbone": text[BACKBONE_ORIGIN],
        "backbone_key": text[BACKBONE_KEY],
        "backbone_from": text[BACKBONE_FROM],
        "pretrain_epochs_trained": reported - reused,
        "pretrain_epochs_reported": reported,
        "saved_s": _num(last, SAVED_SECONDS),
    }


def _num(row: pd.Series | None, key: str) -> float | None:
    """A number of a history row; None where the row, the key or its value is missing (NaN)."""
    return None if row is None else number(row.get(key))

"""Sweep reports: a Ray Tune experiment directory -> report.md, trials.csv and PNG plots.

    ecgtune report runs/smoke-20261125-122541               # -> runs/smoke-20261125-122541/report/
    ecgtune report s3://bucket/runs/smoke-... -o out --top 10

The experiment is read with `pyarrow.fs` (a local path or any URI `pyarrow.fs.FileSystem.from_uri`
takes), never through Ray: a report works on a laptop, on a sweep that is still running, and on one
whose cluster is gone. Files read, per trial directory (any name; the driver names them
`trial_<trial_id>`): `params.json` (the trial config), `result.json` (one JSON line per epoch, as
`ecgtune.stages.TwoStageRun.step` reports it; a last line still being written is skipped) and
`error.txt` (Tune appends one block per failure). Beside them the driver's `summary.json` and
`spec.yaml`, written when a sweep ends; a running sweep has neither.

Every MAE is in the target's unit (`ecgtune.targets.TARGETS`) on the PTB-XL validation fold. Trials
that ASHA stopped early are only ever compared at a fidelity (epochs trained) they all reached.

Read top to bottom: published figures -> loading -> per-trial table -> importance -> writing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pyarrow.fs as pafs
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from pydantic import ValidationError

from ecgtune.models import PRESETS
from ecgtune.paths import check_new_file, claim_output_dir, marker_kind, write_marker
from ecgtune.spec import Distribution, Spec, apply_variant, data_root, describe_space, resolve_store
from ecgtune.targets import TARGET_NAMES, TARGETS, check_targets
from ecgtune.trial_status import EPOCH, OBJECTIVE, STATUS_MEANING, STATUSES, TOTAL_EPOCHS, trial_status

# Files of an experiment directory. SUMMARY_FILE and SPEC_FILE are the names ecgtune.search writes;
# they are repeated here, not imported, because ecgtune.search imports Ray.
PARAMS_FILE, RESULT_FILE, ERROR_FILE = "params.json", "result.json", "error.txt"
SUMMARY_FILE, SPEC_FILE = "summary.json", "spec.yaml"
REPORT_DIR = "report"
MAE_KEY = "ptbxl_val_mae_{}"


class ExperimentError(ValueError):
    """A directory that holds no readable Ray Tune experiment."""


# ============================================================================== published figures


@dataclass(frozen=True)
class Reference:
    """Published per-target figures, with what each number actually measures.

    `mae` maps target names to values in `TARGETS[name].unit`; a target the source does not report
    is absent. `comparable` is False where the number is not an MAE on held-out ECGs.
    """

    source: str
    setting: str
    measures: str
    mae: Mapping[str, float]
    comparable: bool


STUDY_REPO = "cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-accelerators"
_STUDY = "DeepFake->PTB-XL study, README Table V"
_STUDY_MEASURES = "its 'validation loss (MAE)' (see below)"
# What the study's numbers are, printed under the table once.
STUDY_NOTE = (
    f"The DeepFake->PTB-XL transfer study (Peradeniya/Simula; github.com/{STUDY_REPO}) reports as "
    "'MAE' the minimum validation loss over hundreds of epochs (1000 for the ResNet, 500 for the ViT) "
    "of one MSE-trained network per target, on a random split that leaks training ECGs into "
    "validation: not an error on held-out ECGs, and picked as the best of many epochs on the data it "
    "is reported on. Its DeepFake columns are on DeepFake validation ECGs, not PTB-XL."
)

# One table of published figures.
# - The study: README.md of cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-
#   accelerators (commit 1e14518c758c426765e0ad0bd7b17f4e81ba725b), "TABLE V: The summary of validation
#   losses (MAE)", all seven columns (Tables I-IV repeat them). The DeepFake columns are on DeepFake
#   ("small-deepfake") validation ECGs, not PTB-XL. The README gives no units; they are assumed to be
#   bpm/ms like the labels. Every number of Table V is here; nothing was left out.
# - Hicks et al., "Explaining deep neural networks for knowledge discovery in electrocardiogram
#   analysis", Sci Rep 11:10949 (2021), Table 3, column "Median ECG" (replication dataset; MUSE labels).
# - Alam & Stultz, "Estimating ECG Intervals from Lead-I Alone: External Validation of Supervised
#   Models", arXiv:2408.15272 (2024), abstract: internal hold-out of 4.2 M MGH ECGs. No heart rate.
REFERENCES: tuple[Reference, ...] = (
    Reference(
        _STUDY,
        "fully connected net, DeepFake only",
        _STUDY_MEASURES,
        {"hr": 55.82, "pr": 461.05, "qrs": 76.80, "qt": 1661.98},
        False,
    ),
    Reference(
        _STUDY,
        "ResNet, DeepFake only",
        _STUDY_MEASURES,
        {"hr": 0.08, "pr": 5.35, "qrs": 3.36, "qt": 3.94},
        False,
    ),
    Reference(
        _STUDY,
        "ViT, DeepFake only",
        _STUDY_MEASURES,
        {"hr": 1.80, "pr": 162.00, "qrs": 47.73, "qt": 246.70},
        False,
    ),
    Reference(
        _STUDY,
        "ResNet, PTB-XL only",
        _STUDY_MEASURES,
        {"hr": 0.10, "pr": 34.58, "qrs": 6.03, "qt": 40.55},
        False,
    ),
    Reference(
        _STUDY,
        "ViT, PTB-XL only",
        _STUDY_MEASURES,
        {"hr": 18.12, "pr": 233.50, "qrs": 50.63, "qt": 204.60},
        False,
    ),
    Reference(
        _STUDY,
        "ResNet, DeepFake -> PTB-XL (transfer)",
        _STUDY_MEASURES,
        {"hr": 0.05, "pr": 11.80, "qrs": 2.80, "qt": 16.32},
        False,
    ),
    Reference(
        _STUDY,
        "ViT, DeepFake -> PTB-XL (transfer)",
        _STUDY_MEASURES,
        {"hr": 10.88, "pr": 63.78, "qrs": 28.02, "qt": 78.55},
        False,
    ),
    Reference(
        "Hicks et al. 2021, Sci Rep 11:10949, Table 3",
        "CNN on 12-lead median beats, MUSE labels",
        "MAE on a separate replication dataset",
        {"hr": 1.57, "pr": 2.73, "qrs": 2.58, "qt": 3.13},
        True,
    ),
    Reference(
        "Alam & Stultz 2024, arXiv:2408.15272",
        "lead I only, 4.2 M ECGs (MGH)",
        "MAE on an internal hold-out set",
        {"pr": 9.2, "qrs": 6.3, "qt": 11.9},
        True,
    ),
)


# ======================================================================================== loading


@dataclass
class Experiment:
    """One sweep as read from its storage path.

    `trials`: one row per trial (the columns of trials.csv, see `TRIAL_COLUMNS_DOC`); `history`: one
    row per trial and epoch, the metrics of result.json (without the config) plus `trial_id`.
    `params`: the searched parameters (columns of `trials`), in spec order; `sampled` those of them
    the searcher draws (not `same_as` copies). `baseline`: per-target MAE (and `objective`) of
    predicting the training mean, when the fine-tuning store was found; set it yourself otherwise.
    """

    path: str
    name: str
    spec: Spec | None
    trials: pd.DataFrame
    history: pd.DataFrame
    params: tuple[str, ...]
    sampled: tuple[str, ...]
    targets: tuple[str, ...]
    ended: bool
    summary: dict[str, Any] | None = None
    baseline: dict[str, float] | None = None
    floor: dict[str, float] | None = None  # label-noise floor of the validation split (ecgtune.baselines)
    notes: list[str] = field(default_factory=list)

    @property
    def max_epochs(self) -> int:
        return int(self.trials["max_epochs"].max()) if len(self.trials) else 0


TRIAL_COLUMNS_DOC = """\
trial_id, status (finished / stopped / diverged / error / running), epochs (reached), max_epochs,
full_fidelity, rank (among trials that reached the same number of epochs, by last objective; 1 is best),
variant (fixed experiments only), model, family, one column per searched parameter, objective_last,
objective_best, best_epoch, mae_<target>_<unit>_last and _best (best = at the epoch of the best
objective), wall_s (training seconds, Tune's time_total_s), started / ended (unix time), node_id,
device, hostname, failures, error, dir (the trial directory)."""


def load_experiment(path: str | os.PathLike[str], *, baseline: bool = True) -> Experiment:
    """Read an experiment directory, finished or running, from a local path or a pyarrow URI.

    Raises FileNotFoundError when `path` is no directory and ExperimentError when it holds no trial.
    With `baseline`, the predict-the-training-mean baseline is computed when the spec's fine-tuning
    store exists on this machine (`training_mean_baseline`).
    """
    fs, root = _filesystem(path)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{path}: no such experiment directory")
    notes: list[str] = []
    entries = fs.get_file_info(pafs.FileSelector(root))
    files = {e.base_name: e for e in entries if e.type == pafs.FileType.File}
    summary = _read_json(fs, f"{root}/{SUMMARY_FILE}", notes) if SUMMARY_FILE in files else None
    spec_dict = None
    if SPEC_FILE in files:
        try:
            spec_dict = yaml.safe_load(_read_text(fs, f"{root}/{SPEC_FILE}"))
        except yaml.YAMLError as exc:
            notes.append(f"{SPEC_FILE}: not valid YAML ({exc.__class__.__name__}); used params.json")
    raw = [
        t
        for e in sorted(entries, key=lambda e: e.base_name)
        if e.type == pafs.FileType.Directory and (t := _read_trial(fs, e.path, notes)) is not None
    ]
    if not raw:
        raise ExperimentError(
            f"{path}: no trial directories (with {PARAMS_FILE} or {RESULT_FILE}); is this the "
            "experiment directory that Ray Tune wrote (the one holding tuner.pkl)?"
        )
    if spec_dict is None:
        spec_dict = next((t.config["spec"] for t in raw if isinstance(t.config.get("spec"), dict)), None)
    spec = _validate_spec(spec_dict, notes)
    params, sampled = _param_names(spec, raw)
    history = _history(raw)
    targets = _targets(spec, history)
    summary_status = {str(t.get("trial_id")): t.get("status") for t in (summary or {}).get("trials", []) if t}
    trials = _trial_table(raw, history, spec, params, targets, summary_status, summary is not None)
    exp = Experiment(
        path=os.fspath(path),
        name=Path(root.rstrip("/")).name,
        spec=spec,
        trials=trials,
        history=history,
        params=params,
        sampled=sampled,
        targets=targets,
        ended=summary is not None,
        summary=summary,
        notes=notes,
    )
    if baseline and spec is not None:
        exp.baseline, exp.floor = _store_baseline(spec, targets, notes)
    return exp


def _filesystem(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    text = os.fspath(path)
    if "://" in text:
        fs, root = pafs.FileSystem.from_uri(text)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def _read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return f.read().decode("utf-8", errors="replace")


def _read_json(fs: pafs.FileSystem, path: str, notes: list[str]) -> Any:
    try:
        return json.loads(_read_text(fs, path))
    except (json.JSONDecodeError, OSError) as exc:
        notes.append(f"{path}: unreadable ({exc.__class__.__name__}: {exc}); ignored")
        return None


@dataclass
class _TrialFiles:
    dir: str
    config: dict[str, Any]
    results: list[dict[str, Any]]
    error: str | None


def _read_trial(fs: pafs.FileSystem, path: str, notes: list[str]) -> _TrialFiles | None:
    names = {e.base_name for e in fs.get_file_info(pafs.FileSelector(path))}
    if PARAMS_FILE not in names and RESULT_FILE not in names:
        return None
    name = Path(path).name
    config: dict[str, Any] = {}
    if PARAMS_FILE in names:
        config = _read_json(fs, f"{path}/{PARAMS_FILE}", notes) or {}
    results = []
    if RESULT_FILE in names:
        lines = _read_text(fs, f"{path}/{RESULT_FILE}").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines) - 1:  # the last line may still be being written
                    notes.append(f"{name}/{RESULT_FILE}: line {i + 1} is not JSON; skipped")
    if not config and results and isinstance(results[-1].get("config"), dict):
        config = results[-1]["config"]
    error = _read_text(fs, f"{path}/{ERROR_FILE}") if ERROR_FILE in names else None
    return _TrialFiles(name, config, results, error)


def _validate_spec(spec_dict: Any, notes: list[str]) -> Spec | None:
    if spec_dict is None:
        notes.append("no spec (no spec.yaml, no 'spec' in params.json): searched parameters guessed")
        return None
    try:
        # Schema only, as the trial itself reads it (ecgtune.trial.trial_spec); the sweep checked the rest.
        return Spec.model_validate(spec_dict)
    except ValidationError as exc:
        notes.append(
            f"the experiment's spec does not validate with this ecgtune ({exc.error_count()} errors)"
        )
        return None


def _param_names(spec: Spec | None, raw: Sequence[_TrialFiles]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Searched parameters: the spec's search-space keys, then any other key of a trial config.

    Optuna's own names for `divides` parameters (`model.num_heads|model.embed_dim=128`) are left out:
    the sampler's result (`model.num_heads`) is in the config beside them (`ecgtune.spec.trial_params`).
    """
    space = spec.search.space if spec is not None and spec.search is not None else {}
    extra = sorted(
        {k for t in raw for k in t.config if k not in space and k not in ("spec", "variant") and "|" not in k}
    )
    params = (*space, *extra)
    sampled = tuple(k for k in params if k not in space or space[k].type != "same_as")
    return params, sampled


def _history(raw: Sequence[_TrialFiles]) -> pd.DataFrame:
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


def _trial_id(t: _TrialFiles) -> str:
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


def _model_name(spec: Spec | None, config: Mapping[str, Any]) -> str | None:
    if "model.name" in config:  # a searched model name
        return str(config["model.name"])
    if spec is None:
        return None
    overrides = (spec.variants or {}).get(config.get("variant"), {})
    if "model.name" in overrides:
        return str(overrides["model.name"])
    if isinstance(overrides.get("model"), dict) and "name" in overrides["model"]:
        return str(overrides["model"]["name"])
    return spec.model.name


def _family(model: str | None) -> str | None:
    return PRESETS[model][0] if model in PRESETS else model


def _planned_epochs(spec: Spec | None, config: Mapping[str, Any]) -> int:
    """Epochs a trial was set to train, for a trial that has reported none yet."""
    if spec is None:
        return 0
    if config.get("variant") and spec.variants and config["variant"] in spec.variants:
        try:
            spec = apply_variant(spec, config["variant"])
        except ValueError:
            return 0
    pretrain = spec.pretrain_epochs
    return pretrain + spec.stages.finetune.epochs


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
    raw: Sequence[_TrialFiles],
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
        epochs = int(last[EPOCH]) if last is not None else 0
        max_epochs = (
            int(last[TOTAL_EPOCHS])
            if last is not None and pd.notna(last.get(TOTAL_EPOCHS))
            else _planned_epochs(spec, t.config)
        )
        failures, error = error_headline(t.error) if t.error is not None else (0, None)
        reported = summary_status.get(tid)
        status = trial_status(
            None if last is None else last.to_dict(),
            max_epochs=max_epochs,
            errored=error is not None or reported == "error",
            # Tune marks the last result of a trial the scheduler stopped `done`; the driver's summary
            # gives every trial a verdict.
            ended=_flag(last, "done") or ended or reported in STATUSES,
        )
        model = _model_name(spec, t.config)
        row: dict[str, Any] = {
            "trial_id": tid,
            "status": status,
            "epochs": epochs,
            "max_epochs": max_epochs,
            "full_fidelity": bool(max_epochs and epochs >= max_epochs),
        }
        if has_variants:
            row["variant"] = t.config.get("variant")
        row |= {"model": model, "family": _family(model)}
        row |= {p: t.config.get(p) for p in params}
        row |= {
            "objective_last": _num(last, OBJECTIVE),
            "objective_best": _num(best, OBJECTIVE),
            "best_epoch": int(best[EPOCH]) if best is not None else None,
        }
        for x in targets:
            unit = TARGETS[x].unit
            row[f"mae_{x}_{unit}_last"] = _num(last, MAE_KEY.format(x))
            row[f"mae_{x}_{unit}_best"] = _num(best, MAE_KEY.format(x))
        started = _num(h.iloc[0], "timestamp") if h is not None else None
        if started is not None:  # the first epoch's report time minus that epoch's duration
            started -= _num(h.iloc[0], "time_this_iter_s") or 0.0
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


def _flag(row: pd.Series | None, key: str) -> bool:
    """A boolean metric; absent or NaN (a column other lines lack) is False."""
    value = None if row is None else row.get(key)
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and bool(value)


def _num(row: pd.Series | None, key: str) -> float | None:
    if row is None or key not in row or row[key] is None:
        return None
    try:
        value = float(row[key])
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


# ------------------------------------------------------------------------------------- baseline


def training_mean_baseline(store_path: str | os.PathLike[str], targets: Sequence[str]) -> dict[str, float]:
    """Per-target MAE (bpm/ms) on the validation split of predicting every target's training mean,
    scored exactly like a trial, plus its `objective` (`ecgtune.baselines.mean_predictor`)."""
    from ecgtune.baselines import mean_predictor
    from ecgtune.data.store import ECGStore

    return mean_predictor(ECGStore(store_path), "val", targets)


def _store_baseline(
    spec: Spec, targets: Sequence[str], notes: list[str]
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """(mean predictor, label-noise floor) on the validation split of the sweep's fine-tuning store,
    read from the store as it is now on this machine; (None, None) where it is not here."""
    from ecgtune.baselines import label_noise_floor, mean_predictor
    from ecgtune.data.store import ECGStore

    store = spec.data.finetune
    # A demo store is looked up where `ecgtune data demo` puts it, never built by a report.
    path = data_root() / "demo" / store.demo if store.path is None else resolve_store(store)
    if not path.is_dir():
        notes.append(f"baseline: fine-tuning store {path} is not on this machine; not computed")
        return None, None
    try:
        opened = ECGStore(path)
        value = mean_predictor(opened, "val", targets)
        floor = label_noise_floor(opened, "val", targets)
    except (OSError, ValueError, KeyError) as exc:
        notes.append(f"baseline: store {path} unreadable ({exc}); not computed")
        return None, None
    notes.append(f"baseline: from the store now at {path}; the sweep's store may have been rebuilt since")
    return value, floor


# ===================================================================================== importance


def optuna_distribution(dist: Distribution) -> optuna.distributions.BaseDistribution | None:
    """The Optuna distribution of one ecgtune search-space entry; None for `same_as` (not sampled).

    A `divides` parameter is sampled from a subset of its choices that depends on its parent; here it
    gets all of them, so one distribution covers every trial.
    """
    if dist.type == "same_as":
        return None
    if dist.type == "categorical":
        return optuna.distributions.CategoricalDistribution(list(dist.choices or []))
    if dist.type == "int":
        return optuna.distributions.IntDistribution(
            int(dist.low), int(dist.high), log=dist.log, step=int(dist.step or 1)
        )
    return optuna.distributions.FloatDistribution(
        float(dist.low), float(dist.high), log=dist.log, step=dist.step
    )


def param_importances(experiment: Experiment) -> tuple[dict[str, dict[str, float]], list[str]]:
    """fANOVA importance of the sampled parameters, per fidelity; and notes on what was skipped.

    Keys: "full fidelity (E epochs)" over finished trials, and "after e epochs" over every finished
    and ASHA-stopped trial, scored at e = the fewest epochs any of them reached (ASHA's first rung):
    both compare trials at one fidelity, never a stopped trial's early value with a final one.
    """
    notes: list[str] = []
    spec = experiment.spec
    if spec is None or spec.search is None:
        return {}, ["importance: no search space in the spec"]
    dists = {
        k: optuna_distribution(spec.search.space[k]) for k in experiment.sampled if k in spec.search.space
    }
    dists = {k: d for k, d in dists.items() if d is not None}
    if len(dists) < 2:
        return {}, [f"importance: {len(dists)} searched parameter(s); fANOVA needs at least 2"]
    t = experiment.trials
    done = t[t["status"].isin(["finished", "stopped"]) & (t["epochs"] > 0)]
    sets: dict[str, dict[str, float]] = {}
    full = done[done["full_fidelity"]]
    sets[f"full fidelity ({experiment.max_epochs} epochs)"] = dict(
        zip(full["trial_id"], full["objective_last"], strict=True)
    )
    if len(done) and done["epochs"].min() < experiment.max_epochs:
        e = int(done["epochs"].min())
        at = experiment.history[(experiment.history[EPOCH] == e)].set_index("trial_id")[OBJECTIVE]
        sets[f"after {e} epoch{'s' * (e != 1)} (finished + stopped)"] = {
            tid: float(at[tid]) for tid in done["trial_id"] if tid in at.index
        }
    out = {}
    params = t.set_index("trial_id")
    for label, values in sets.items():
        result = _fanova(params, dists, values)
        if isinstance(result, str):
            notes.append(f"importance {label}: {result}")
        else:
            out[label] = result
    return out, notes


def _fanova(
    params: pd.DataFrame,
    dists: Mapping[str, optuna.distributions.BaseDistribution],
    values: Mapping[str, float],
) -> dict[str, float] | str:
    trials = []
    for tid, value in values.items():
        if value is None or not math.isfinite(value):
            continue
        p = {k: _as_sampled(dists[k], params.at[tid, k]) for k in dists}
        if any(v is _UNUSABLE for v in p.values()):
            continue
        trials.append(optuna.trial.create_trial(params=p, distributions=dict(dists), value=float(value)))
    if len(trials) < 2:
        return f"{len(trials)} usable trial(s); skipped (needs 2)"
    if np.ptp([tr.value for tr in trials]) == 0:
        return "every trial has the same objective; skipped"
    varied = [k for k in dists if len({repr(tr.params[k]) for tr in trials}) > 1]
    if len(varied) < 2:
        return f"only {len(varied)} parameter(s) vary across these trials; skipped"
    with _quiet_optuna():
        study = optuna.create_study(direction="minimize")
        study.add_trials(trials)
        try:
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        except (ValueError, RuntimeError) as exc:
            return f"fANOVA failed ({exc}); skipped"
    return {k: float(v) for k, v in imp.items()}


_UNUSABLE = object()


def _as_sampled(dist: optuna.distributions.BaseDistribution, value: Any) -> Any:
    """`value` as `dist` would have produced it (a choice, an int), or _UNUSABLE (create_trial
    refuses values outside a distribution). A categorical choice may itself be None."""
    value = _plain(value)
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        i = _choice_index(dist.choices, value)
        return _UNUSABLE if i is None else dist.choices[i]
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return _UNUSABLE
    if not dist.low <= value <= dist.high:
        return _UNUSABLE
    if isinstance(dist, optuna.distributions.IntDistribution):
        ok = float(value).is_integer() and (int(value) - dist.low) % dist.step == 0
        return int(value) if ok else _UNUSABLE
    return float(value)


def _choice_index(choices: Sequence[Any], value: Any) -> int | None:
    """Position of `value` among `choices`; True is not 1 here, but 8.0 (a float column) is 8."""
    for i, c in enumerate(choices):
        if isinstance(c, bool) == isinstance(value, bool) and c == value:
            return i
    return None


def _plain(v: Any) -> Any:
    """numpy scalars -> Python; NaN (a missing cell) -> None."""
    if isinstance(v, np.generic):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


# ======================================================================================== writing


def report_experiment(
    path: str | os.PathLike[str], outdir: str | os.PathLike[str] | None = None, top_k: int = 5
) -> list[str]:
    """Load an experiment and write its report; return where the files went.

    `outdir` defaults to `<experiment>/report`. A URI outdir (or the default for a URI experiment) is
    filled through pyarrow.fs from a local temporary directory.
    """
    experiment = load_experiment(path)
    target = os.fspath(outdir) if outdir is not None else f"{os.fspath(path).rstrip('/')}/{REPORT_DIR}"
    if "://" not in target:
        return [str(p) for p in write_report(experiment, target, top_k=top_k)]
    fs, root = pafs.FileSystem.from_uri(target)
    with tempfile.TemporaryDirectory() as tmp:
        written = write_report(experiment, tmp, top_k=top_k)
        fs.create_dir(root, recursive=True)
        pafs.copy_files(tmp, root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return [f"{target.rstrip('/')}/{p.name}" for p in written]


def write_report(experiment: Experiment, outdir: str | os.PathLike[str], top_k: int = 5) -> list[Path]:
    """Write report.md, trials.csv and the PNG plots into the local directory `outdir`; return them."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1 (got {top_k})")
    out = claim_report_dir(Path(outdir))
    written = [out / "trials.csv"]
    experiment.trials.to_csv(written[0], index=False)
    importances, imp_notes = param_importances(experiment)
    plots, plot_notes = _plots(experiment, importances, out, top_k)
    text = _markdown(experiment, top_k, importances, [*imp_notes, *plot_notes], plots)
    (out / "report.md").write_text(text, encoding="utf-8")
    return [out / "report.md", *written, *plots]


def claim_report_dir(out: Path) -> Path:
    """The report directory, checked: reports are rewritten only in a directory ecgtune marked as one.

    A directory of only report files, written before directories were marked, is adopted."""
    if out.is_dir() and marker_kind(out) is None:
        names = [p.name for p in out.iterdir()]
        ours = all(n in ("report.md", "trials.csv") or n.endswith(".png") for n in names)
        if "report.md" in names and ours:
            write_marker(out, "report")
    return claim_output_dir(out, "report")


# ------------------------------------------------------------------------------------- markdown


def _percent(value: float | None, of: float | None) -> str:
    return "—" if value is None or not of else f"{100.0 * value / of:.0f}%"


def _mae_col(target: str, which: str = "last") -> str:
    return f"mae_{target}_{TARGETS[target].unit}_{which}"


def _cell(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return f"{v:.3g}" if v != 0 and (abs(v) < 0.01 or abs(v) >= 1e5) else f"{v:.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _target_head(targets: Sequence[str], suffix: str = "") -> list[str]:
    return [f"{TARGETS[t].title}{suffix} ({TARGETS[t].unit})" for t in targets]


def _mae_cells(row: Mapping[str, Any], targets: Sequence[str], which: str = "last") -> list[str]:
    return [_cell(row.get(f"mae_{t}_{TARGETS[t].unit}_{which}")) for t in targets]


def _param_cells(row: Mapping[str, Any], params: Sequence[str]) -> list[str]:
    return [_cell(row.get(p), 3) for p in params]


def _fidelity(row: Mapping[str, Any]) -> str:
    return f"{row['epochs']}/{row['max_epochs']}"


def _markdown(
    exp: Experiment,
    top_k: int,
    importances: Mapping[str, Mapping[str, float]],
    extra_notes: Sequence[str],
    plots: Sequence[Path],
) -> str:
    t, targets, params = exp.trials, exp.targets, list(exp.sampled)
    full = t[t["full_fidelity"] & t["objective_last"].notna()].sort_values("objective_last")
    counts = t["status"].value_counts()
    tol = ", ".join(f"{TARGETS[x].title} {TARGETS[x].tolerance:g} {TARGETS[x].unit}" for x in targets)
    title = exp.spec.name if exp.spec is not None else exp.name
    md = [f"# Sweep report: {title}", ""]
    md += [
        f"- experiment: `{exp.path}`",
        "- state: "
        + (
            "ended (summary.json written by the driver)"
            if exp.ended
            else "**running or interrupted** (no summary.json yet): a partial view"
        ),
        f"- trials: {len(t)} — " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES),
        f"- epochs per trial at full fidelity: {exp.max_epochs}"
        + (_stage_split(exp.spec) if exp.spec is not None else ""),
        f"- models: {', '.join(f'{m} ({f})' for m, f in _unique(zip(t['model'], t['family'], strict=True)))}",
    ]
    devices = t["device"].dropna().value_counts() if "device" in t else pd.Series(dtype=int)
    if len(devices):  # a GPU sweep whose trials ran on the CPU shows here (resources.cpu_fallback)
        md.append("- trained on: " + ", ".join(f"{d} ({n} trials)" for d, n in devices.items()))
    if exp.spec is not None and exp.spec.search is not None and exp.spec.search.space:
        md += ["", "Searched parameters:", "", "```", describe_space(exp.spec.search.space), "```"]
    md += [
        "",
        "Every ecgtune number below is measured on the PTB-XL validation fold: MAE per target in its unit; "
        f"objective = mean over targets of MAE / tolerance ({tol}). *Last* is a trial's last "
        "reported epoch (the model its checkpoint holds); *best* is its epoch with the lowest "
        "objective, chosen on the same validation fold and so slightly optimistic. Trials are compared "
        "only at the same number of epochs trained. Status: "
        + "; ".join(f"*{s}*: {STATUS_MEANING[s]}" for s in STATUSES)
        + ".",
    ]

    lengths = sorted(set(full["max_epochs"]))
    length = f"{lengths[0]} epochs" if len(lengths) == 1 else "each trial its own epochs"
    md += ["", f"## Full-fidelity ranking ({length if len(full) else f'{exp.max_epochs} epochs'})", ""]
    if len(full):
        head = [
            "rank",
            "trial",
            "model",
            *params,
            "objective",
            *_target_head(targets),
            "best objective (epoch)",
        ]
        ranks = full["objective_last"].rank(method="min").astype(int)
        rows = [
            [
                str(ranks[i]),
                r["trial_id"],
                _cell(r["model"]),
                *_param_cells(r, params),
                _cell(r["objective_last"], 3),
                *_mae_cells(r, targets),
                f"{_cell(r['objective_best'], 3)} ({_cell(r['best_epoch'])})",
            ]
            for i, r in full.iterrows()
        ]
        md.append(_table(head, rows[: max(top_k, 20)]))
        if len(rows) > max(top_k, 20):
            md.append(f"\n… and {len(rows) - max(top_k, 20)} more in trials.csv.")
    else:
        md.append("No trial has trained every epoch yet; see the rankings at each fidelity below.")

    md += ["", "## Best trial per model family", ""]
    md.append(_best_per_family(t, targets))
    md += ["", "## Best trial per target", ""]
    md.append(_best_per_target(t, full, targets))
    md += ["", f"## Spread across the top {top_k} full-fidelity trials", ""]
    md.append(_spread(full.head(top_k), targets))
    md += ["", "## Ranking at each fidelity (ASHA rungs)", ""]
    md.append(_rungs(exp, top_k))
    md += ["", "## All trials", ""]
    md.append(_all_trials(exp))
    failed = t[t["status"] == "error"]
    md += ["", "## Failed trials", ""]
    if len(failed):
        md.append(
            _table(
                ["trial", "epochs reached", "failures", "error (last line of its last failure)"],
                [
                    [r["trial_id"], _fidelity(r), str(r["failures"]), f"`{_cell(r['error'])}`"]
                    for _, r in failed.iterrows()
                ],
            )
        )
    else:
        md.append("None.")
    recovered = t[(t["status"] != "error") & (t["failures"] > 0)]
    if len(recovered):
        md.append(
            "\nRecovered after failures (retried from a checkpoint): "
            + ", ".join(
                f"{r['trial_id']} ({r['failures']}× `{_cell(r['error'])}`)" for _, r in recovered.iterrows()
            )
        )
    md += ["", "## Against the mean predictor and the label-noise floor", ""]
    if exp.baseline is not None:
        rows = []
        if len(full):
            best = full.iloc[0]
            objective = _cell(best["objective_last"], 3)
            rows.append(["best full-fidelity trial", objective, *_mae_cells(best, targets)])
            rows.append(
                [
                    "… as % of the mean predictor",
                    "",
                    *[_percent(_num(best, _mae_col(x)), exp.baseline.get(x)) for x in targets],
                ]
            )
        rows.append(
            [
                "mean predictor (training mean for every ECG)",
                _cell(exp.baseline.get("objective"), 3),
                *[_cell(exp.baseline.get(x)) for x in targets],
            ]
        )
        floor = exp.floor or {}
        floor_cells = [_cell(floor.get(x)) for x in targets]
        rows.append(["label-noise floor (a perfect model's MAE)", "", *floor_cells])
        md.append(_table(["", "objective", *_target_head(targets)], rows))
        md.append(
            "\nMAE on the validation split. The floor is known where the data's source knows its label "
            "noise (simulated data: the noise added to exact labels); — elsewhere."
        )
    else:
        md.append(
            "Not available: results hold no baseline and the fine-tuning store was not found here. "
            "Compute it with `ecgtune.report.training_mean_baseline(store, targets)` and set "
            "`Experiment.baseline` before `write_report`."
        )
    md += ["", "## Published figures beside this sweep", ""]
    md.append(_references(exp, full, targets))
    md += ["", "## Hyperparameter importance (fANOVA)", ""]
    if importances:
        labels = list(importances)
        names = sorted(
            {k for v in importances.values() for k in v},
            key=lambda k: -max(v.get(k, 0.0) for v in importances.values()),
        )
        md.append(
            _table(
                ["parameter", *labels],
                [[n, *[_cell(importances[lb].get(n), 3) for lb in labels]] for n in names],
            )
        )
        md.append(
            "\nShare of the objective's variance explained by each parameter (Optuna's "
            "FanovaImportanceEvaluator, seed 0), over trials compared at one fidelity; with few "
            "trials these numbers are noisy."
        )
    else:
        md.append("Not computed (see notes).")
    if plots:
        md += ["", "## Plots", ""]
        md += [f"![{p.stem}]({p.name})" for p in plots]
    notes = [*exp.notes, *extra_notes]
    if notes:
        md += ["", "## Notes", ""]
        md += [f"- {n}" for n in notes]
    md.append("")
    return "\n".join(md)


def _unique(items: Any) -> list[Any]:
    seen: list[Any] = []
    for i in items:
        if i not in seen:
            seen.append(i)
    return seen


def _stage_split(spec: Spec) -> str:
    if spec.variants:
        return " (fixed experiments: each variant sets its own stages)"
    pretrain = spec.pretrain_epochs
    return f" (pretrain on DeepFake {pretrain} + fine-tune on PTB-XL {spec.stages.finetune.epochs})"


def _best_at_highest_fidelity(group: pd.DataFrame) -> pd.Series | None:
    g = group[group["objective_last"].notna()]
    if not len(g):
        return None
    top = g[g["epochs"] == g["epochs"].max()]
    return top.loc[top["objective_last"].idxmin()]


def _best_per_family(t: pd.DataFrame, targets: Sequence[str]) -> str:
    rows = []
    for family, group in t.groupby("family", dropna=False, sort=True):
        full = group[group["full_fidelity"] & group["objective_last"].notna()]
        r = full.loc[full["objective_last"].idxmin()] if len(full) else _best_at_highest_fidelity(group)
        if r is None:
            rows.append([_cell(family), "–", "no results yet", "–", "–", *["–"] * len(targets)])
            continue
        fidelity = _fidelity(r) + ("" if r["full_fidelity"] else " (not full: not comparable)")
        rows.append(
            [
                _cell(family),
                _cell(r["model"]),
                r["trial_id"],
                fidelity,
                _cell(r["objective_last"], 3),
                *_mae_cells(r, targets),
            ]
        )
    return _table(["family", "model", "trial", "epochs", "objective", *_target_head(targets)], rows)


def _best_per_target(t: pd.DataFrame, full: pd.DataFrame, targets: Sequence[str]) -> str:
    pool, note = full, ""
    if not len(pool):
        best = _best_at_highest_fidelity(t)
        if best is None:
            return "No results yet."
        pool = t[(t["epochs"] == best["epochs"]) & t["objective_last"].notna()]
        note = f"\nNo trial has finished: compared at {best['epochs']} epochs, the most any trial reached."
    rows = []
    for x in targets:
        col = f"mae_{x}_{TARGETS[x].unit}_last"
        g = pool[pool[col].notna()]
        if not len(g):
            rows.append([f"{TARGETS[x].title} ({TARGETS[x].unit})", "–", "–", "–", "–", "–"])
            continue
        r = g.loc[g[col].idxmin()]
        rows.append(
            [
                f"{TARGETS[x].title} ({TARGETS[x].unit})",
                _cell(r[col]),
                r["trial_id"],
                _cell(r["model"]),
                _fidelity(r),
                _cell(r["objective_last"], 3),
            ]
        )
    return _table(["target", "MAE (last epoch)", "trial", "model", "epochs", "objective"], rows) + note


def _spread(top: pd.DataFrame, targets: Sequence[str]) -> str:
    if not len(top):
        return "No full-fidelity trials yet."
    cols = ["objective_last", *[f"mae_{x}_{TARGETS[x].unit}_last" for x in targets]]
    rows = [
        [
            stat,
            *[_cell(getattr(top[c].astype(float), stat)(), 3 if i == 0 else 2) for i, c in enumerate(cols)],
        ]
        for stat in ("median", "min", "max")
    ]
    return _table([f"over {len(top)} trials", "objective", *_target_head(targets)], rows)


def _rungs(exp: Experiment, top_k: int) -> str:
    t, h, targets = exp.trials, exp.history, exp.targets
    partial = t[(~t["full_fidelity"]) & (t["epochs"] > 0)]
    levels = sorted(set(partial["epochs"]))
    if not levels:
        return "Every trial with results trained every epoch: the full-fidelity ranking is the only one."
    out = [
        "Each table compares every trial that reached that many epochs, on its objective *at* that "
        "epoch (what ASHA compares at a rung), whatever it did later."
    ]
    info = t.set_index("trial_id")
    for e in levels:
        at = h[h[EPOCH] == e].dropna(subset=[OBJECTIVE]).sort_values(OBJECTIVE)
        ranks = at[OBJECTIVE].rank(method="min").astype(int)
        rows = []
        for i, r in at.head(top_k).iterrows():
            tr = info.loc[r["trial_id"]]
            rows.append(
                [
                    str(ranks[i]),
                    r["trial_id"],
                    tr["status"],
                    _fidelity(tr),
                    *_param_cells(tr, exp.sampled),
                    _cell(r[OBJECTIVE], 3),
                    *[_cell(r.get(MAE_KEY.format(x))) for x in targets],
                ]
            )
        head = [
            "rank",
            "trial",
            "status",
            "epochs reached",
            *exp.sampled,
            f"objective at {e}",
            *_target_head(targets),
        ]
        out += [
            "",
            f"### After {e} epoch{'s' * (e != 1)} ({len(at)} trials reached it)",
            "",
            _table(head, rows),
        ]
        if len(at) > top_k:
            out.append(f"\n… and {len(at) - top_k} more.")
    return "\n".join(out)


def _all_trials(exp: Experiment, limit: int = 100) -> str:
    t, targets = exp.trials, exp.targets
    ordered = t.sort_values(["epochs", "objective_last"], ascending=[False, True], na_position="last")
    head = [
        "trial",
        "status",
        "epochs",
        "rank at its epochs",
        "model",
        *exp.sampled,
        "objective last",
        "objective best (epoch)",
        *_target_head(targets, " last"),
        *_target_head(targets, " best"),
        "wall s",
        "host",
    ]
    rows = [
        [
            r["trial_id"],
            r["status"],
            _fidelity(r),
            _cell(r["rank"]),
            _cell(r["model"]),
            *_param_cells(r, exp.sampled),
            _cell(r["objective_last"], 3),
            f"{_cell(r['objective_best'], 3)} ({_cell(r['best_epoch'])})",
            *_mae_cells(r, targets, "last"),
            *_mae_cells(r, targets, "best"),
            _cell(r["wall_s"], 1),
            _cell(r["hostname"]),
        ]
        for _, r in ordered.head(limit).iterrows()
    ]
    text = _table(head, rows)
    if len(t) > limit:
        text += f"\n\n… and {len(t) - limit} more in trials.csv."
    return text


def _references(exp: Experiment, full: pd.DataFrame, targets: Sequence[str]) -> str:
    head = ["source", "setting", "what the number is", *_target_head(targets)]
    rows = []
    for _, r in full.drop_duplicates("family").iterrows():  # full is sorted: best of each family
        rows.append(
            [
                f"ecgtune, this sweep: trial {r['trial_id']}",
                f"{_cell(r['model'])}, best full-fidelity {r['family']} trial",
                f"MAE on the fine-tuning store's validation split (PTB-XL: strat_fold 9, whole "
                f"patients), last of {r['max_epochs']} epochs",
                *_mae_cells(r, targets),
            ]
        )
    if exp.baseline is not None:
        rows.append(
            [
                "ecgtune, this sweep",
                "predict the training mean",
                "MAE on the same validation split",
                *[_cell(exp.baseline.get(x)) for x in targets],
            ]
        )
    for ref in REFERENCES:
        rows.append(
            [
                _cell(ref.source),
                ref.setting,
                ref.measures if ref.comparable else f"**not comparable**: {ref.measures}",
                *[_cell(ref.mae.get(x)) for x in targets],
            ]
        )
    return _table(head, rows) + (
        f"\n\n{STUDY_NOTE} Only rows that are an MAE on ECGs the model never trained on compare "
        "with ecgtune's, and even those differ in labels (MUSE vs PTB-XL+), leads and data. "
        "A dash: the source does not report that target."
    )


# ---------------------------------------------------------------------------------------- plots


def _plots(
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
        best = _best_at_highest_fidelity(t)
        if best is None:
            return "no results yet"
        pool = t[(t["epochs"] == best["epochs"]) & t["objective_last"].notna()]
        label = f"{best['epochs']}-epoch (none finished yet)"
    top = pool.sort_values("objective_last").head(top_k)
    fig, axes = _figure(len(exp.targets), width=3.2 * len(exp.targets) + 1)
    for ax, x in zip(axes[0], exp.targets, strict=True):
        target = TARGETS[x]
        ax.bar(top["trial_id"], top[f"mae_{x}_{target.unit}_last"], color="C0")
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
    values = [_plain(v) for v in t[param]]
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
        choices = list(dist.choices) if dist is not None and dist.choices else _unique(values)
        x = np.array([np.nan if (i := _choice_index(choices, v)) is None else i for v in values], dtype=float)
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


__all__ = [
    "REFERENCES",
    "TRIAL_COLUMNS_DOC",
    "Experiment",
    "ExperimentError",
    "Reference",
    "error_headline",
    "load_experiment",
    "optuna_distribution",
    "param_importances",
    "report_experiment",
    "training_mean_baseline",
    "write_report",
]


# --------------------------------------------------------------------------- export


def export_best(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """Write the best full-fidelity trial of an experiment as a standalone training config.

    "Best" = lowest last-epoch objective among trials that trained every planned epoch; trials
    ASHA stopped are never chosen, since their value is from fewer epochs. The result is a
    complete Spec (model, every hyperparameter, data, targets, stages, seed) without `search`,
    that `ecgtune train` runs as is; `origin` records where it came from.
    """
    from ecgtune import __version__
    from ecgtune.spec import apply_params, dump_spec

    out = check_new_file(out)
    experiment = load_experiment(path, baseline=False)
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
    spec = experiment.spec
    if spec.variants:
        config = apply_variant(spec, str(best["variant"]))
    else:
        space = spec.search.space if spec.search else {}
        params = {}
        for p in experiment.sampled:
            # Table cells back to the values the sampler gave (pandas turns ints into floats beside NaN).
            value = _as_sampled(optuna_distribution(space[p]), best[p]) if p in space else _plain(best[p])
            if value is not _UNUSABLE and value is not None:
                params[p] = value
        config = apply_params(spec, params)
    origin = {
        "experiment": str(path),
        "trial_id": str(best["trial_id"]),
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


def _git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (res.stdout.strip() or None) if res.returncode == 0 else None

"""The files of an experiment directory, read and written through `pyarrow.fs` (a local path or any URI
`pyarrow.fs.FileSystem.from_uri` takes), never through Ray.

Layout (Ray Tune writes the trial directories; the driver, `ecgtune.search`, writes the rest through
`write_spec` and `write_summary`):

    <experiment>/spec.yaml        the sweep's resolved spec, written when the sweep starts (and again on
                                  resume), so a running or crashed sweep can be read
    <experiment>/summary.json     every trial's verdict and the best trial, written when the sweep ends
    <experiment>/study.json       where the sweep's Optuna study is (`ecgtune.study`), written at its start
    <experiment>/optuna.journal   that study, when it is a journal file beside the experiment
    <experiment>/<trial dir>/     one per trial, any name (the driver names them `trial_<trial_id>`):
        params.json               the trial's config as the searcher gave it (JSON types)
        result.json               one JSON line per epoch, as `ecgtune.stages.TwoStageRun.step` reports
                                  it plus Tune's keys; a last line still being written is skipped
        error.txt                 Tune appends one block per failure
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import yaml

from ecgtune.spec import Spec

SPEC_FILE, SUMMARY_FILE = "spec.yaml", "summary.json"
# The sweep's Optuna study (`ecgtune.study`): its journal file (when kept beside the experiment) and the
# pointer to wherever it is kept.
STUDY_FILE, STUDY_POINTER_FILE = "optuna.journal", "study.json"
PARAMS_FILE, RESULT_FILE, ERROR_FILE = "params.json", "result.json", "error.txt"


class ExperimentError(ValueError):
    """A directory that holds no readable Ray Tune experiment."""


def filesystem(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a local path or URI, and the path on it (absolute, no trailing slash)."""
    text = os.fspath(path)
    if "://" in text:
        fs, root = pafs.FileSystem.from_uri(text)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


# ======================================================================================== writing


def write_spec(experiment_path: str, spec: Spec) -> None:
    """spec.yaml: the sweep's spec as the driver runs it (store paths resolved)."""
    write_text(experiment_path, SPEC_FILE, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))


def write_summary(experiment_path: str, summary: dict[str, Any]) -> None:
    """summary.json (`ecgtune.experiment.sweep_summary`, from `ecgtune.sweep_results.summarize`)."""
    write_text(experiment_path, SUMMARY_FILE, json.dumps(summary, indent=2, default=str))


def write_text(experiment_path: str, name: str, text: str) -> None:
    """One file of the experiment directory, whole or not at all."""
    fs, root = filesystem(experiment_path)
    if isinstance(fs, pafs.LocalFileSystem):
        Path(root).mkdir(parents=True, exist_ok=True)
        tmp = Path(root) / f".{name}.tmp"
        tmp.write_text(text)
        tmp.rename(Path(root) / name)  # readers never see half a file
        return
    with fs.open_output_stream(f"{root}/{name}") as f:
        f.write(text.encode())


# ======================================================================================== reading


def read_spec(experiment_path: str | os.PathLike[str]) -> Spec | None:
    """spec.yaml as the driver wrote it (the spec as run), checked by the schema; None without one."""
    fs, root = filesystem(experiment_path)
    try:
        text = _read_text(fs, f"{root}/{SPEC_FILE}")
    except FileNotFoundError:
        return None
    return Spec.model_validate(yaml.safe_load(text))


@dataclass
class TrialFiles:
    """One trial directory as read: its name, params.json, the lines of result.json and error.txt."""

    dir: str
    config: dict[str, Any]
    results: list[dict[str, Any]]
    error: str | None


@dataclass
class ExperimentFiles:
    """An experiment directory as read: the driver's files (None where absent) and every trial directory.

    `spec` is spec.yaml as parsed YAML (not validated); `notes` say what could not be read.
    """

    root: str
    spec: Any
    summary: dict[str, Any] | None
    trials: list[TrialFiles]
    notes: list[str]


def read_files(path: str | os.PathLike[str]) -> ExperimentFiles:
    """Read an experiment directory, finished or running, from a local path or a pyarrow URI.

    Raises FileNotFoundError when `path` is no directory and ExperimentError when it holds no trial.
    """
    fs, root = filesystem(path)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{path}: no such experiment directory")
    notes: list[str] = []
    entries = fs.get_file_info(pafs.FileSelector(root))
    files = {e.base_name: e for e in entries if e.type == pafs.FileType.File}
    summary = _read_json(fs, f"{root}/{SUMMARY_FILE}", notes) if SUMMARY_FILE in files else None
    spec = None
    if SPEC_FILE in files:
        try:
            spec = yaml.safe_load(_read_text(fs, f"{root}/{SPEC_FILE}"))
        except yaml.YAMLError as exc:
            notes.append(f"{SPEC_FILE}: not valid YAML ({exc.__class__.__name__}); used params.json")
    trials = [
        t
        for e in sorted(entries, key=lambda e: e.base_name)
        if e.type == pafs.FileType.Directory and (t := _read_trial(fs, e.path, notes)) is not None
    ]
    if not trials:
        raise ExperimentError(
            f"{path}: no trial directories (with {PARAMS_FILE} or {RESULT_FILE}); is this the "
            "experiment directory that Ray Tune wrote (the one holding tuner.pkl)?"
        )
    return ExperimentFiles(root, spec, summary, trials, notes)


def _read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return f.read().decode("utf-8", errors="replace")


def _read_json(fs: pafs.FileSystem, path: str, notes: list[str]) -> Any:
    try:
        return json.loads(_read_text(fs, path))
    except (json.JSONDecodeError, OSError) as exc:
        notes.append(f"{path}: unreadable ({exc.__class__.__name__}: {exc}); ignored")
        return None


def _read_trial(fs: pafs.FileSystem, path: str, notes: list[str]) -> TrialFiles | None:
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
    return TrialFiles(name, config, results, error)

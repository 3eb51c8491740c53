"""Where a sweep's Optuna study lives, so that optuna-dashboard can show it and a later sweep can start
from it (`--warm-start`): the one owner of the study's location.

Ray's OptunaSearch keeps the study in memory unless it is given a storage (ray-project/ray PR #48547).
Every ecgtune sweep gives it one:
- `run.optuna_storage`, an RDB URL (`postgresql://...`, `sqlite:///...`) for teams with a database;
- otherwise a journal file (Optuna's JournalStorage: an append-only log, no server; read through
  `ecgtune.journal_storage`, whose reads per suggestion do not grow with the study) on the driver's disk:
  `<experiment>/optuna.journal` when the experiment directory is local, and
  `~/.ecgtune/studies/<experiment name>.journal` when it is a URI (s3://...: a journal needs a file).

The study is named after the experiment. `<experiment>/study.json` records both, so `ecgtune dashboard`
and `--warm-start` find the study from the experiment directory alone. No Ray here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ecgtune.experiment.files import STUDY_FILE, STUDY_POINTER_FILE, filesystem, write_text

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class StudyLocation:
    """`storage`: an RDB URL, or the path of a journal file. `name`: the study's name in it."""

    storage: str
    name: str

    @property
    def is_journal(self) -> bool:
        return "://" not in self.storage

    def open(self) -> optuna.storages.BaseStorage:
        import optuna
        from optuna.storages.journal import JournalFileBackend

        from ecgtune.journal_storage import IndexedJournalStorage

        if self.is_journal:
            Path(self.storage).parent.mkdir(parents=True, exist_ok=True)
            return IndexedJournalStorage(JournalFileBackend(self.storage))
        return optuna.storages.get_storage(self.storage)


def study_location(optuna_storage: str | None, experiment_path: str, experiment_name: str) -> StudyLocation:
    """Where a new sweep's study goes (see the module docstring)."""
    if optuna_storage:
        return StudyLocation(optuna_storage, experiment_name)
    if "://" in experiment_path:
        home = Path(os.environ.get("ECGTUNE_HOME", Path.home() / ".ecgtune"))
        return StudyLocation(str(home / "studies" / f"{experiment_name}.journal"), experiment_name)
    return StudyLocation(str(Path(experiment_path) / STUDY_FILE), experiment_name)


def write_study_pointer(
    experiment_path: str, location: StudyLocation, warm_start: list[dict] | None = None
) -> None:
    """study.json: where the experiment's study is, for `ecgtune dashboard` and `--warm-start`, and which
    earlier sweeps' trials it started with (`ecgtune.warm_start`)."""
    pointer = {"storage": location.storage, "study": location.name, "warm_start": warm_start or []}
    write_text(experiment_path, STUDY_POINTER_FILE, json.dumps(pointer, indent=1))


def read_warm_start(experiment_path: str | os.PathLike[str]) -> list[dict]:
    """The warm start study.json records ([] for a sweep without one, or without study.json)."""
    fs, root = filesystem(experiment_path)
    try:
        with fs.open_input_stream(f"{root}/{STUDY_POINTER_FILE}") as f:
            return list(json.loads(f.read().decode()).get("warm_start", []))
    except (FileNotFoundError, ValueError):
        return []


def read_study_pointer(experiment_path: str | os.PathLike[str]) -> StudyLocation:
    """The study of an experiment directory, from its study.json; one line naming what is missing."""
    fs, root = filesystem(experiment_path)
    path = f"{root}/{STUDY_POINTER_FILE}"
    try:
        with fs.open_input_stream(path) as f:
            data = json.loads(f.read().decode())
        return StudyLocation(str(data["storage"]), str(data["study"]))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{experiment_path}: no {STUDY_POINTER_FILE}; is it an experiment directory of an ecgtune sweep "
            "(one written by this version, which keeps its Optuna study)?"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a study pointer ({exc.__class__.__name__}: {exc})") from None

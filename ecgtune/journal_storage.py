"""Optuna's journal storage, with the two reads a suggestion makes answered without scanning the study.

A sweep's study lives in a journal file (`ecgtune.study`). Optuna's JournalStorage answers every
`get_all_trials` by walking all of the study's trials and testing each one's state, and each suggestion
asks twice: `Study.ask` looks for WAITING trials (enqueued ones: warm start, a reused backbone), and the
sampler reads the whole list (TPE's view, `ecgtune.bounded_tpe`; multivariate TPE's search space). At
10,000 trials that walk was most of a suggestion's growth (measured: docs/benchmarks.md part 4, "The
driver at scale").

`IndexedJournalStorage` keeps, per study that has been read, its trials by number and the numbers of its
WAITING trials, and brings them up to date from what changed: the journal changes only by replaying new
log lines (every write is appended to the log and then replayed, ours and other processes' alike), so
the trials those lines name are the ones to look at again. The unfiltered read then copies a list, and
the WAITING read looks at the waiting trials only. Every other read is Optuna's own.
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any

import optuna
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial, TrialState


class IndexedJournalStorage(optuna.storages.JournalStorage):
    def __init__(self, log_storage: BaseJournalBackend) -> None:
        self._reset_index()  # before Optuna's constructor, which replays the journal
        super().__init__(log_storage)

    def _reset_index(self) -> None:
        self._listed: dict[int, list[FrozenTrial]] = {}  # study id -> its trials, by number
        self._waiting: dict[int, set[int]] = {}  # study id -> numbers of its WAITING trials
        self._touched: set[int] = set()  # trial ids named by logs replayed since the last refresh

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        for key in ("_listed", "_waiting", "_touched"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)  # a fresh replay, which reads the journal on first use
        self._reset_index()  # and so a fresh index

    def _sync_with_backend(self) -> None:
        # Optuna's two lines, noting the trials the new logs name (every trial operation carries its id).
        logs = list(self._backend.read_logs(self._replay_result.log_number_read))
        self._replay_result.apply_logs(logs)
        self._touched.update(log["trial_id"] for log in logs if "trial_id" in log)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if states is not None and not _only_waiting(states):
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        with self._thread_lock:
            self._sync_with_backend()
            if study_id not in self._replay_result._studies:  # deleted, or never created
                return self._replay_result.get_all_trials(study_id, states)  # raises Optuna's KeyError
            listed, waiting = self._refresh(study_id)
            trials = list(listed) if states is None else [listed[n] for n in sorted(waiting)]
        return copy.deepcopy(trials) if deepcopy else trials

    def _refresh(self, study_id: int) -> tuple[list[FrozenTrial], set[int]]:
        replay = self._replay_result
        for sid, listed in self._listed.items():  # trials created since the last refresh
            for trial_id in replay._study_id_to_trial_ids[sid][len(listed) :]:
                listed.append(replay._trials[trial_id])
                self._touched.add(trial_id)
        for trial_id in self._touched:  # trials changed since (a change replaces the FrozenTrial)
            sid = replay._trial_id_to_study_id.get(trial_id)
            if sid in self._listed:
                trial = replay._trials[trial_id]
                self._listed[sid][trial.number] = trial
                if trial.state == TrialState.WAITING:
                    self._waiting[sid].add(trial.number)
                else:
                    self._waiting[sid].discard(trial.number)
        self._touched.clear()
        if study_id not in self._listed:  # first read of this study: one walk
            listed = [replay._trials[i] for i in replay._study_id_to_trial_ids[study_id]]
            self._listed[study_id] = listed
            self._waiting[study_id] = {t.number for t in listed if t.state == TrialState.WAITING}
        return self._listed[study_id], self._waiting[study_id]


def _only_waiting(states: Container[TrialState]) -> bool:
    try:
        return set(states) == {TrialState.WAITING}  # type: ignore[call-overload]
    except TypeError:  # a container that cannot be listed
        return False

"""TPE that reads a bounded view of the study, so its Parzen estimators stay small as a sweep grows.

Optuna's TPESampler reads every finished and stopped trial of the study at each suggestion: it sorts them
into a "good" group (the best gamma(n) = min(ceil(0.1 n), 25) of them) and a "bad" group, and fits a
Parzen estimator to each, one kernel per trial, for every parameter. Its time per suggestion therefore
grows linearly with the trials seen (measured on the driver: 2.7 ms at 100 trials, 93 ms at 5,000;
docs/benchmarks.md part 4), and a GPU cluster that ends a trial a second makes the driver the bottleneck.

`BoundedTPESampler` gives TPE a bounded view of the study: every trial while there are at most `history`,
and beyond that the best `history / 2` (the good group is among them, as gamma(n) <= 25) and the newest
`history / 2` of the rest. The good group is then exactly the one the full study gives; the bad group's
estimator is fitted to a recent sample of it. TPE's constant liar (Optuna 5's default, so that
parallel trials are not suggested alike) also reads the running trials: they come on top of the view, at
most the sweep's concurrency. Below `history` trials it samples exactly as TPESampler with the same seed.

The view is kept incrementally, because a finished trial never changes: each suggestion looks only at
the trials created since the last one and at those that were still running then (at most the sweep's
concurrency), and updates the best half and the newest half in place; the study is fetched once per
suggestion. That fetch, and `Study.ask`'s look for waiting trials, walked the whole journal until the
study was kept in `ecgtune.journal_storage`, which answers both without walking it (measured on the
driver: docs/benchmarks.md part 4, "The driver at scale").
"""

from __future__ import annotations

import bisect
import weakref
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
_STATES_AND_RUNNING = (*_STATES, TrialState.RUNNING)  # as TPE's constant liar asks


class BoundedTPESampler(optuna.samplers.TPESampler):
    def __init__(self, *args: Any, history: int = 1000, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.history = history
        self._views: dict[int, tuple[weakref.ref, _View]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Views hold weak references and are rebuilt from the study in one pass after a restore.
        return {**self.__dict__, "_views": {}}

    def _view(self, study: optuna.Study) -> _View:
        ref, view = self._views.get(id(study), (None, None))
        if ref is None or ref() is not study:  # a new study (or a new object at a freed id)
            view = _View(self.history)
            self._views = {id(study): (weakref.ref(study), view)}  # a sampler serves one study
        return view

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(_BoundedStudy(study, self._view(study), trial), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(
            _BoundedStudy(study, self._view(study), trial), trial, param_name, param_distribution
        )


class _BoundedStudy:
    """A study as TPE reads it: its finished and stopped trials come from the bounded view; every other
    read and attribute is the study's own."""

    def __init__(self, study: optuna.Study, view: _View, asking: FrozenTrial):
        self._study, self._view, self._asking = study, view, asking.number

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = False, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        states = tuple(states or ())
        if deepcopy or states not in (_STATES, _STATES_AND_RUNNING):
            return self._study._get_trials(deepcopy=deepcopy, states=states or None, use_cache=use_cache)
        # One fetch of the unfiltered list per suggestion (the view does the rest): TPE reads the study
        # once per parameter it samples on its own, and a journal storage builds the list anew each time.
        if self._view.fetched_for != self._asking:
            fetched = self._study._get_trials(deepcopy=False, states=None, use_cache=use_cache)
            self._view.fetched_for, self._view.fetched = self._asking, fetched
        trials = self._view.fetched
        view = self._view.update(trials)
        if states == _STATES:
            return view
        # The constant liar (Optuna's default) also reads the running trials, at most the concurrency.
        running = [trials[n] for n in self._view.unfinished if trials[n].state == TrialState.RUNNING]
        return sorted(view + running, key=_number) if running else view


class _View:
    """At most `history` finished and stopped trials, in trial order: all of them while there are at most
    `history`, then the best `history / 2` by `_rank` and the newest `history - history / 2` of the rest.

    Kept incrementally: `best` holds (rank, number, trial) sorted, `rest` (number, trial) sorted; a trial
    pushed out of `best` joins `rest` if it is among the newest there, and the oldest of `rest` drops out
    (for good: every trial that finishes later is either newer or better)."""

    def __init__(self, history: int):
        self.half, self.keep_rest = history // 2, history - history // 2
        self.seen = 0  # trials 0 .. seen - 1 have been looked at
        self.unfinished: list[int] = []  # numbers among them still running or waiting
        self.best: list[tuple[tuple[int, float], int, FrozenTrial]] = []
        self.rest: list[tuple[int, FrozenTrial]] = []
        self.trials: list[FrozenTrial] = []  # the view, rebuilt only when it changed
        # The study's trials as fetched for the trial being suggested: nothing else changes the study
        # while one trial's parameters are sampled (Tune's driver asks from one thread).
        self.fetched_for: int | None = None
        self.fetched: list[FrozenTrial] = []

    def update(self, all_trials: list[FrozenTrial]) -> list[FrozenTrial]:
        if all_trials and all_trials[-1].number != len(all_trials) - 1:
            raise RuntimeError("the study's trials are not listed by number; the view needs them so")
        looked_at = self.unfinished + list(range(self.seen, len(all_trials)))
        if not looked_at:
            return self.trials
        self.unfinished, changed = [], False
        for number in looked_at:
            t = all_trials[number]
            if t.state in _STATES:
                self._add(t)
                changed = True
            elif not t.state.is_finished():
                self.unfinished.append(number)
        self.seen = len(all_trials)
        if changed:
            self.trials = sorted([t for _, _, t in self.best] + [t for _, t in self.rest], key=_number)
        return self.trials

    def _add(self, t: FrozenTrial) -> None:
        bisect.insort(self.best, (_rank(t), t.number, t), key=lambda e: e[:2])
        if len(self.best) > self.half:
            _, number, out = self.best.pop()
            bisect.insort(self.rest, (number, out), key=lambda e: e[0])
            if len(self.rest) > self.keep_rest:
                self.rest.pop(0)


def _number(t: FrozenTrial) -> int:
    return t.number


def _rank(t: FrozenTrial) -> tuple[int, float]:
    """Best first: finished trials by value, then stopped ones by the step they reached (later first)
    and their last value there, as TPE ranks them."""
    if t.state == TrialState.COMPLETE and t.value is not None:
        return (0, t.value)
    if t.intermediate_values:
        step = max(t.intermediate_values)
        return (1 + 1_000_000 - step, t.intermediate_values[step])
    return (2_000_000, float("inf"))

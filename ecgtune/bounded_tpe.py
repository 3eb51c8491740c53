"""TPE that reads a bounded view of the study, so its Parzen estimators stay small as a sweep grows.

Optuna's TPESampler reads every finished and stopped trial of the study at each suggestion: it sorts them
into a "good" group (the best gamma(n) = min(ceil(0.1 n), 25) of them) and a "bad" group, and fits a
Parzen estimator to each, one kernel per trial, for every parameter. Its time per suggestion therefore
grows linearly with the trials seen (measured on the driver: 2.7 ms at 100 trials, 93 ms at 5,000;
docs/benchmarks.md part 4), and a GPU cluster that ends a trial a second makes the driver the bottleneck.

`BoundedTPESampler` gives TPE a bounded view of the study: every trial while there are at most `history`,
and beyond that the best `history / 2` (the good group is among them, as gamma(n) <= 25) and the newest
`history / 2` of the rest. The good group is then exactly the one the full study gives; the bad group's
estimator is fitted to a recent sample of it. Below `history` trials it samples exactly as TPESampler
with the same seed. The view is rebuilt only when the study gained trials.

What it does not bound yet (measured, docs/benchmarks.md part 4): building the view still reads the whole
study, once per parameter, and ranks it once per new finished trial, so a suggestion still costs time
linear in the trials, if far less (with a view of 250: 3.6 ms at 100 trials, 39 ms at 2,000, against
TPE's 93 ms at 5,000 reading everything). Finished trials never change, so the view could be kept
incrementally.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


class BoundedTPESampler(optuna.samplers.TPESampler):
    def __init__(self, *args: Any, history: int = 1000, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.history = history

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(_BoundedStudy(study, self.history), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(
            _BoundedStudy(study, self.history), trial, param_name, param_distribution
        )


class _BoundedStudy:
    """A study as TPE reads it, limited to `history` trials (see the module docstring); every other
    attribute is the study's own."""

    _views: dict[tuple[int, int], list[FrozenTrial]] = {}

    def __init__(self, study: optuna.Study, history: int):
        self._study, self._history = study, history

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = False, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        if len(trials) <= self._history or tuple(states or ()) != _STATES:
            return trials
        key = (id(self._study), len(trials))
        view = _BoundedStudy._views.get(key)
        if view is None:
            half = self._history // 2
            ranked = sorted(trials, key=_rank)
            best = ranked[:half]
            chosen = {t.number for t in best}
            newest = [t for t in reversed(trials) if t.number not in chosen][: self._history - half]
            view = sorted(best + newest, key=lambda t: t.number)
            _BoundedStudy._views = {key: view}  # one view at a time: the study only grows
        return view


def _rank(t: FrozenTrial) -> tuple[int, float]:
    """Best first: finished trials by value, then stopped ones by the step they reached (later first)
    and their last value there, as TPE ranks them."""
    if t.state == TrialState.COMPLETE and t.value is not None:
        return (0, t.value)
    if t.intermediate_values:
        step = max(t.intermediate_values)
        return (1 + 1_000_000 - step, t.intermediate_values[step])
    return (2_000_000, float("inf"))

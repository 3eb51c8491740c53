"""The driver's Tune callbacks: the dashboard's per-sweep series (`SweepGauges`: trials by state, backbone
store hits and misses) and the console's lines (`ProgressLines`). What a trial's status is stays
`ecgtune.experiment.trial_status`'s decision; the series names are `ecgtune.metrics`'."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ray import tune
from ray.util.metrics import Gauge

from ecgtune.experiment import BACKBONE_ORIGIN, EPOCH, OBJECTIVE, STATUSES, trial_status
from ecgtune.metrics import LOOKUP_RESULTS, SWEEP_BACKBONE_LOOKUPS, SWEEP_TRIALS, KeptGauge
from ecgtune.spec import Spec
from ecgtune.sweep_log import SweepLog
from ecgtune.trial import metrics_report_interval_s


def ended_status(trial: Any, max_epochs: int, errored: bool) -> str:
    """The status of a trial Tune has just completed or errored, by `ecgtune.experiment.trial_status`:
    the dashboard's gauges and the console's lines ask here, the summary asks the same rule."""
    return trial_status(trial.last_result, max_epochs=max_epochs, errored=errored)


class SweepGauges(tune.Callback):
    """Per-sweep trial counts for the Ray dashboard's metrics, one series per `STATUSES` entry.

    `max_epochs`: the sweep's planned epochs per trial, for a last result without `total_epochs`."""

    def __init__(self, sweep: str, max_epochs: int = 0):
        self.sweep = sweep
        self.max_epochs = max_epochs
        self.counts: Counter[str] = Counter()
        self.gauge: KeptGauge | None = None
        # Backbone store hits and misses, one per trial, from the first result that says which.
        self.lookups: Counter[str] = Counter()
        self._looked_up: set[str] = set()
        self.lookup_gauge: KeptGauge | None = None

    def _publish(self) -> None:
        if self.gauge is None:
            gauge = Gauge(SWEEP_TRIALS.name, SWEEP_TRIALS.description, SWEEP_TRIALS.labels)
            self.gauge = KeptGauge(gauge, metrics_report_interval_s())
        for state in STATUSES:
            self.gauge.set(self.counts[state], {"sweep": self.sweep, "state": state})

    def on_trial_start(self, iteration, trials, trial, **info):
        self.counts["running"] += 1
        self._publish()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        origin = result.get(BACKBONE_ORIGIN)
        if origin not in LOOKUP_RESULTS or trial.trial_id in self._looked_up:
            return
        self._looked_up.add(trial.trial_id)
        self.lookups[LOOKUP_RESULTS[origin]] += 1
        if self.lookup_gauge is None:
            s = SWEEP_BACKBONE_LOOKUPS
            self.lookup_gauge = KeptGauge(Gauge(s.name, s.description, s.labels), metrics_report_interval_s())
        for outcome in LOOKUP_RESULTS.values():
            self.lookup_gauge.set(self.lookups[outcome], {"sweep": self.sweep, "result": outcome})

    def _ended(self, status: str) -> None:
        self.counts["running"] -= 1
        self.counts[status] += 1
        self._publish()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(ended_status(trial, self.max_epochs, errored=False))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(ended_status(trial, self.max_epochs, errored=True))

    def on_experiment_end(self, trials, **info):
        # Stop re-setting the counts; the final ones still reach the metrics agent (measured: a driver
        # that exited 1 s after its last set, with the default 10 s report interval, had it exported).
        for gauge in (self.gauge, self.lookup_gauge):
            if gauge is not None:
                gauge.release()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state; the gauges are rebuilt on first use.
        return {**self.__dict__, "gauge": None, "lookup_gauge": None}



class ProgressLines(tune.Callback):
    """The console's view of a sweep: a line per trial epoch and per ended trial
    (`ecgtune.sweep_log.SweepLog`), in place of Tune's table of every trial every few seconds."""

    def __init__(self, spec: Spec):
        self.log = SweepLog(spec.targets)
        self.max_epochs = spec.total_epochs
        space = spec.search.space if spec.search else {}
        self.shown = ["variant", *(k for k, d in space.items() if d.type != "same_as")]  # not the copies

    def on_trial_result(self, iteration, trials, trial, result, **info):
        params = {k: trial.config[k] for k in self.shown if k in trial.config}
        self.log.result(trial.trial_id, params, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, errored=True, note="see the summary")

    def _ended(self, trial: Any, errored: bool, note: str = "") -> None:
        last = trial.last_result or {}
        status = ended_status(trial, self.max_epochs, errored)
        self.log.ended(trial.trial_id, status, last.get(EPOCH, 0), last.get(OBJECTIVE), note)

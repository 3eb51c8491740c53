"""The driver's Tune callbacks: the dashboard's series (`SweepGauges`: each trial's epochs, trials by state,
backbone store hits and misses) and the console's lines (`ProgressLines`). What a trial's status is stays
`ecgtune.experiment.trial_status`'s decision; the series names are `ecgtune.metrics`'.

Every series is published here, by the driver, never by a trial's worker. Ray hands a process's gauge
to the metrics agent once per report interval (10 s by default), and Tune ends a stopped trial's worker
within a second of the result it was stopped on: a trial that ASHA stopped soon after its first report
(common when its backbone came from the store) could set its gauges and exit before any was exported
(a CI run's Prometheus had no series of one trial of four). The driver sees every result, the one a
trial was stopped on included, and lives through the sweep; a paused trial's series stays on too."""

from __future__ import annotations

from collections import Counter
from typing import Any

import ray
from ray import tune
from ray.util.metrics import Gauge

from ecgtune import metrics as m
from ecgtune.experiment import BACKBONE_ORIGIN, EPOCH, MAE_KEY, OBJECTIVE, STATUSES, trial_status
from ecgtune.metrics import LOOKUP_RESULTS, SWEEP_BACKBONE_LOOKUPS, SWEEP_TRIALS, KeptGauge
from ecgtune.spec import Spec
from ecgtune.sweep_log import SweepLog
from ecgtune.targets import TARGET_NAMES


def metrics_report_interval_s() -> float:
    """How often this process hands its metrics to the node's agent (RAY_metrics_report_interval_ms)."""
    return max(ray._config.metrics_report_interval_ms(), 1000) / 1000


def _gauge(series: m.Series) -> KeptGauge:
    return KeptGauge(Gauge(series.name, series.description, series.labels), metrics_report_interval_s())


def ended_status(trial: Any, max_epochs: int, errored: bool) -> str:
    """The status of a trial Tune has just completed or errored, by `ecgtune.experiment.trial_status`:
    the dashboard's gauges and the console's lines ask here, the summary asks the same rule."""
    return trial_status(trial.last_result, max_epochs=max_epochs, errored=errored)


class TrialSeries:
    """Each trial's series (objective, fine-tuning objective, MAE per target, epoch, stage), set from its
    results; a trial's values stay on the export (`metrics.KeptGauge`) from its first result until it ends."""

    def __init__(self, sweep: str):
        self.sweep = sweep
        self.objective = _gauge(m.TRIAL_OBJECTIVE)
        # The objective of fine-tuning epochs only: a "best so far" over it never counts the zero-shot
        # read-outs of pretraining, which no fine-tuned model reached.
        self.finetune_objective = _gauge(m.TRIAL_FINETUNE_OBJECTIVE)
        self.epoch = _gauge(m.TRIAL_EPOCH)
        self.stage = _gauge(m.TRIAL_STAGE)
        self.mae = _gauge(m.TRIAL_VAL_MAE)

    def _gauges(self) -> list[KeptGauge]:
        return [g for g in vars(self).values() if isinstance(g, KeptGauge)]

    def update(self, trial_id: str, result: dict[str, Any]) -> None:
        if OBJECTIVE not in result or result.get("stage") not in m.STAGE_VALUES:
            return  # not an epoch of ecgtune's trainable: a callback that raised would end the sweep
        tags = {"sweep": self.sweep, "trial": trial_id}
        self.objective.set(result[OBJECTIVE], tags)
        if result["stage"] == "finetune":
            self.finetune_objective.set(result[OBJECTIVE], tags)
        self.epoch.set(result[EPOCH], tags)
        self.stage.set(m.STAGE_VALUES[result["stage"]], tags)
        for t in TARGET_NAMES:
            if MAE_KEY.format(t) in result:
                self.mae.set(result[MAE_KEY.format(t)], {**tags, "target": t})

    def end(self, trial_id: str) -> None:
        """Stop re-setting the trial's values: its series ends two report intervals after the last export."""
        for gauge in self._gauges():
            gauge.release({"sweep": self.sweep, "trial": trial_id})

    def close(self) -> None:
        for gauge in self._gauges():
            gauge.release()


class SweepGauges(tune.Callback):
    """The dashboard's series of one sweep: each trial's epochs (`TrialSeries`), the trial counts, one series
    per `STATUSES` entry, and the backbone store's hits and misses.

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
        self.trial_series: TrialSeries | None = None

    def _publish(self) -> None:
        if self.gauge is None:
            self.gauge = _gauge(SWEEP_TRIALS)
        for state in STATUSES:
            self.gauge.set(self.counts[state], {"sweep": self.sweep, "state": state})

    def on_trial_start(self, iteration, trials, trial, **info):
        self.counts["running"] += 1
        self._publish()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.trial_series is None:
            self.trial_series = TrialSeries(self.sweep)
        self.trial_series.update(trial.trial_id, result)
        origin = result.get(BACKBONE_ORIGIN)
        if origin not in LOOKUP_RESULTS or trial.trial_id in self._looked_up:
            return
        self._looked_up.add(trial.trial_id)
        self.lookups[LOOKUP_RESULTS[origin]] += 1
        if self.lookup_gauge is None:
            self.lookup_gauge = _gauge(SWEEP_BACKBONE_LOOKUPS)
        for outcome in LOOKUP_RESULTS.values():
            self.lookup_gauge.set(self.lookups[outcome], {"sweep": self.sweep, "result": outcome})

    def _ended(self, trial: Any, status: str) -> None:
        if self.trial_series is not None:
            self.trial_series.end(trial.trial_id)
        self.counts["running"] -= 1
        self.counts[status] += 1
        self._publish()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, ended_status(trial, self.max_epochs, errored=False))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, ended_status(trial, self.max_epochs, errored=True))

    def on_experiment_end(self, trials, **info):
        # Stop re-setting the counts; the final ones still reach the metrics agent (measured: a driver
        # that exited 1 s after its last set, with the default 10 s report interval, had it exported).
        for gauge in (self.gauge, self.lookup_gauge):
            if gauge is not None:
                gauge.release()
        if self.trial_series is not None:
            self.trial_series.close()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state; the gauges are rebuilt on first use.
        return {**self.__dict__, "gauge": None, "lookup_gauge": None, "trial_series": None}



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

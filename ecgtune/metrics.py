"""The series ecgtune publishes to Ray's Prometheus export: the one list of their names.

The gauges (`ecgtune.sweep_callbacks.SweepGauges`, on the sweep's driver) are built from these
entries, `cluster/grafana/ecgtune-dashboard.json` queries them, and the README's monitoring section
names them; `tests/test_monitoring.py` checks that the three agree. No Ray import here, so
that test runs in a second without a cluster.

Ray prefixes every custom metric with `ray_`: `Gauge("ecgtune_trial_epoch")` is scraped as
`ray_ecgtune_trial_epoch`. A process hands a gauge set since its last report to the node's metrics
agent every `metrics_report_interval_ms` (10 s by default), and the agent keeps a value for two such
intervals; `KeptGauge` (below) re-sets the latest values until they are released (a trial's when it
ends, the sweep's when it ends), so a series lives that long plus those two intervals.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

PROMETHEUS_PREFIX = "ray_"

# ray_ecgtune_trial_stage values.
STAGE_VALUES: dict[str, int] = {"pretrain": 0, "finetune": 1}


@dataclass(frozen=True)
class Series:
    """One gauge: the name given to `ray.util.metrics.Gauge`, its help text and its label keys.

    `off_board`: why the Grafana board does not show it (None: some panel queries it).
    """

    name: str
    description: str
    labels: tuple[str, ...]
    off_board: str | None = None

    @property
    def prometheus_name(self) -> str:
        return PROMETHEUS_PREFIX + self.name


TRIAL_OBJECTIVE = Series(
    "ecgtune_trial_objective",
    "PTB-XL validation objective after each epoch of both stages (during pretraining: the pretrained "
    "model read out zero-shot); mean over targets of MAE / clinical tolerance, lower is better",
    ("sweep", "trial"),
)
TRIAL_FINETUNE_OBJECTIVE = Series(
    "ecgtune_trial_finetune_objective",
    "PTB-XL validation objective after each fine-tuning epoch only (no value during pretraining)",
    ("sweep", "trial"),
)
TRIAL_VAL_MAE = Series(
    "ecgtune_trial_val_mae",
    "PTB-XL validation MAE after each epoch, in the target's unit (bpm for hr, ms for pr, qrs, qt)",
    ("sweep", "trial", "target"),
)
TRIAL_EPOCH = Series("ecgtune_trial_epoch", "epochs finished (both stages)", ("sweep", "trial"))
TRIAL_STAGE = Series(
    "ecgtune_trial_stage",
    "0 = pretraining on DeepFake, 1 = fine-tuning on PTB-XL",
    ("sweep", "trial"),
)
SWEEP_TRIALS = Series(
    "ecgtune_sweep_trials", "trials of a sweep by state, counted by the driver", ("sweep", "state")
)

SWEEP_BACKBONE_LOOKUPS = Series(
    "ecgtune_sweep_backbone_lookups",
    "trials of a sweep by what they found in the backbone store: hit (reused a pretrained backbone) or "
    "miss (pretrained it), counted by the driver from each trial's first result",
    ("sweep", "result"),
)
# ray_ecgtune_sweep_backbone_lookups' `result` label values.
LOOKUP_RESULTS: dict[str, str] = {"reused": "hit", "pretrained": "miss"}

SERIES: tuple[Series, ...] = (
    TRIAL_OBJECTIVE,
    TRIAL_FINETUNE_OBJECTIVE,
    TRIAL_VAL_MAE,
    TRIAL_EPOCH,
    TRIAL_STAGE,
    SWEEP_TRIALS,
    SWEEP_BACKBONE_LOOKUPS,
)
BY_PROMETHEUS_NAME: dict[str, Series] = {s.prometheus_name: s for s in SERIES}


# ================================================================================== keeping values


class _Keeper:
    """Re-sets the latest value of every kept gauge and label set, every `period_s`, from one daemon
    thread per process.

    Ray 2.60 exports a worker's gauge to the node's metrics agent only in a report interval in which
    it was set, and the agent drops a value two intervals after its last export. Measured with the
    default 10 s interval: a value set once was scraped from 10 s to 30 s after the set and then no
    more, though its process lived on. The driver sets a trial's gauges once per epoch (minutes on a
    GPU node) and the counts once per trial event, so without this the board would show a few seconds
    after each epoch and gaps in between.
    """

    def __init__(self) -> None:
        self.period_s = 5.0
        self._values: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[Any, float, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def set(self, owner: KeptGauge, value: float, tags: dict[str, str]) -> None:
        with self._lock:
            self._values[(id(owner), tuple(sorted(tags.items())))] = (owner.gauge, value, dict(tags))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ecgtune-gauges", daemon=True)
                self._thread.start()

    def release(self, owner: KeptGauge, match: dict[str, str] | None = None) -> None:
        items = set((match or {}).items())
        with self._lock:
            for key in [k for k in self._values if k[0] == id(owner) and items <= set(k[1])]:
                del self._values[key]

    def refresh(self) -> None:
        with self._lock:
            values = list(self._values.values())
        for gauge, value, tags in values:
            try:
                gauge.set(value, tags)
            except Exception:  # noqa: BLE001  (Ray shut down under a released-too-late gauge: harmless)
                pass

    def _run(self) -> None:
        while True:
            time.sleep(self.period_s)
            self.refresh()


_KEEPER = _Keeper()


class KeptGauge:
    """A `ray.util.metrics.Gauge` whose latest values stay on the metrics export until `release()`."""

    def __init__(self, gauge: Any, report_interval_s: float):
        self.gauge = gauge
        # Twice per report interval, so every interval sees a fresh value.
        _KEEPER.period_s = min(_KEEPER.period_s, max(0.5, report_interval_s / 2))

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.gauge.set(value, tags)
        _KEEPER.set(self, value, tags)

    def release(self, match: dict[str, str] | None = None) -> None:
        """Stop re-setting the label sets that include `match` (all of them without one): each series
        ends two report intervals after its last export."""
        _KEEPER.release(self, match)

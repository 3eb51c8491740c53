"""The series ecgtune publishes to Ray's Prometheus export: the one list of their names.

The gauges (`ecgtune.trial._DashboardGauges`, `ecgtune.search.SweepGauges`) are built from these
entries, `cluster/grafana/ecgtune-dashboard.json` queries them, and the README's monitoring section
names them; `tests/test_monitoring_names.py` checks that the three agree. No Ray import here, so
that test runs in a second without a cluster.

Ray prefixes every custom metric with `ray_`: `Gauge("ecgtune_trial_epoch")` is scraped as
`ray_ecgtune_trial_epoch`. A worker's gauges reach its node's metrics agent every
`metrics_report_interval_ms` (10 s by default) and stay there for two such intervals after the
worker exits; then the series ends.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    published_by: str  # "trial" (each trial's worker process) or "driver" (the sweep's driver)
    off_board: str | None = None

    @property
    def prometheus_name(self) -> str:
        return PROMETHEUS_PREFIX + self.name


TRIAL_OBJECTIVE = Series(
    "ecgtune_trial_objective",
    "PTB-XL validation objective after each epoch of both stages (during pretraining: the pretrained "
    "model read out zero-shot); mean over targets of MAE / clinical tolerance, lower is better",
    ("sweep", "trial"),
    "trial",
)
TRIAL_FINETUNE_OBJECTIVE = Series(
    "ecgtune_trial_finetune_objective",
    "PTB-XL validation objective after each fine-tuning epoch only (no value during pretraining)",
    ("sweep", "trial"),
    "trial",
)
TRIAL_VAL_MAE = Series(
    "ecgtune_trial_val_mae",
    "PTB-XL validation MAE after each epoch, in the target's unit (bpm for hr, ms for pr, qrs, qt)",
    ("sweep", "trial", "target"),
    "trial",
)
TRIAL_EPOCH = Series("ecgtune_trial_epoch", "epochs finished (both stages)", ("sweep", "trial"), "trial")
TRIAL_STAGE = Series(
    "ecgtune_trial_stage",
    "0 = pretraining on DeepFake, 1 = fine-tuning on PTB-XL",
    ("sweep", "trial"),
    "trial",
)
SWEEP_TRIALS = Series(
    "ecgtune_sweep_trials", "trials of a sweep by state, counted by the driver", ("sweep", "state"), "driver"
)

SERIES: tuple[Series, ...] = (
    TRIAL_OBJECTIVE,
    TRIAL_FINETUNE_OBJECTIVE,
    TRIAL_VAL_MAE,
    TRIAL_EPOCH,
    TRIAL_STAGE,
    SWEEP_TRIALS,
)
BY_PROMETHEUS_NAME: dict[str, Series] = {s.prometheus_name: s for s in SERIES}

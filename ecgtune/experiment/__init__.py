"""The experiment directory, owned in one place and without Ray: its file names (`files`), the keys a
trial reports and the one rule for a trial's status (`results`), a trial's own spec and planned epochs
(`reader.trial_spec`, asking `ecgtune.spec.Spec`), and the reader (`reader.read_experiment`).

The driver (`ecgtune.search`) writes through `write_spec` and, with `sweep_summary`'s content,
`write_summary`; the report, the export
and the dashboard's gauges read and decide through here.
"""

from ecgtune.experiment.files import (
    ERROR_FILE,
    PARAMS_FILE,
    RESULT_FILE,
    SPEC_FILE,
    SUMMARY_FILE,
    ExperimentError,
    filesystem,
    read_spec,
    write_spec,
    write_summary,
)
from ecgtune.experiment.reader import (
    TRIAL_COLUMNS_DOC,
    Experiment,
    error_headline,
    read_experiment,
    trial_spec,
)
from ecgtune.experiment.results import (
    BACKBONE_FROM,
    BACKBONE_KEY,
    BACKBONE_ORIGIN,
    DIVERGED,
    EPOCH,
    MAE_KEY,
    MODE,
    OBJECTIVE,
    REUSED_EPOCH,
    SAVED_SECONDS,
    STATUS_MEANING,
    STATUSES,
    TOTAL_EPOCHS,
    finite_objective,
    is_diverged,
    trial_status,
)
from ecgtune.experiment.summary import describe_backbone, sweep_failure, sweep_summary, trial_summary

__all__ = [
    "BACKBONE_FROM",
    "BACKBONE_KEY",
    "BACKBONE_ORIGIN",
    "DIVERGED",
    "EPOCH",
    "ERROR_FILE",
    "MAE_KEY",
    "MODE",
    "OBJECTIVE",
    "PARAMS_FILE",
    "REUSED_EPOCH",
    "SAVED_SECONDS",
    "RESULT_FILE",
    "SPEC_FILE",
    "STATUSES",
    "STATUS_MEANING",
    "SUMMARY_FILE",
    "TOTAL_EPOCHS",
    "TRIAL_COLUMNS_DOC",
    "describe_backbone",
    "Experiment",
    "ExperimentError",
    "error_headline",
    "filesystem",
    "finite_objective",
    "is_diverged",
    "read_experiment",
    "read_spec",
    "sweep_failure",
    "sweep_summary",
    "trial_spec",
    "trial_status",
    "trial_summary",
    "write_spec",
    "write_summary",
]

"""Sweep reports: a Ray Tune experiment directory -> report.md, trials.csv and PNG plots; and the
export of its best full-fidelity trial as a training config.

    ecgtune report runs/smoke-20261125-122541               # -> runs/smoke-20261125-122541/report/
    ecgtune report s3://bucket/runs/smoke-... -o out --top 10
    ecgtune export runs/smoke-20261125-122541 -o best.yaml

The experiment is read by `ecgtune.experiment` (its files, the trial table, the status rule), never
through Ray. Trials that ASHA stopped early are only ever compared at a fidelity (epochs trained)
they all reached. One module per concern: `baseline` (the mean predictor and label-noise floor from
the fine-tuning store), `importance` (fANOVA), `plots`, `references` (published figures),
`markdown` (report.md), `write` (the report's files), `export`.
"""

from ecgtune.report.baseline import load_experiment, training_mean_baseline
from ecgtune.report.export import export_best
from ecgtune.report.importance import optuna_distribution, param_importances
from ecgtune.report.references import REFERENCES, Reference
from ecgtune.report.write import report_experiment, write_report

__all__ = [
    "REFERENCES",
    "Reference",
    "export_best",
    "load_experiment",
    "optuna_distribution",
    "param_importances",
    "report_experiment",
    "training_mean_baseline",
    "write_report",
]

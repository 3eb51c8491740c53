"""The predict-the-training-mean baseline and the label-noise floor beside a sweep's results, read from
its fine-tuning store as it is now on this machine."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ecgtune.data.locate import resolve_store
from ecgtune.experiment import Experiment, read_experiment
from ecgtune.spec import Spec


def load_experiment(path: str | os.PathLike[str], *, baseline: bool = True) -> Experiment:
    """`ecgtune.experiment.read_experiment`, and with `baseline` the predict-the-training-mean
    baseline and label-noise floor, where the spec's fine-tuning store exists on this machine."""
    experiment = read_experiment(path)
    if baseline and experiment.spec is not None:
        experiment.baseline, experiment.floor = store_baseline(
            experiment.spec, experiment.targets, experiment.notes
        )
    return experiment


def training_mean_baseline(store_path: str | os.PathLike[str], targets: Sequence[str]) -> dict[str, float]:
    """Per-target MAE (bpm/ms) on the validation split of predicting every target's training mean,
    scored exactly like a trial, plus its `objective` (`ecgtune.baselines.mean_predictor`)."""
    from ecgtune.baselines import mean_predictor
    from ecgtune.data.store import ECGStore

    return mean_predictor(ECGStore(store_path), "val", targets)


def store_baseline(
    spec: Spec, targets: Sequence[str], notes: list[str]
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """(mean predictor, label-noise floor) on the validation split of the sweep's fine-tuning store,
    read from the store as it is now on this machine; (None, None) where it is not here."""
    from ecgtune.baselines import label_noise_floor, mean_predictor
    from ecgtune.data.store import ECGStore

    store = spec.data.finetune
    # A demo store is looked up where `ecgtune data demo` puts it, never built by a report.
    path = resolve_store(store)
    if not path.is_dir():
        notes.append(f"baseline: fine-tuning store {path} is not on this machine; not computed")
        return None, None
    try:
        opened = ECGStore(path)
        value = mean_predictor(opened, "val", targets)
        floor = label_noise_floor(opened, "val", targets)
    except (OSError, ValueError, KeyError) as exc:
        notes.append(f"baseline: store {path} unreadable ({exc}); not computed")
        return None, None
    notes.append(f"baseline: from the store now at {path}; the sweep's store may have been rebuilt since")
    return value, floor

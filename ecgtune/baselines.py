"""What every MAE is shown beside: the score to beat, and the score no model can beat.

* The **mean predictor** predicts every target's training mean for every ECG, scored exactly like a
  model (`ecgtune.train.errors_in_units`). A model that does not beat it by a wide margin has learnt
  nothing (PTB-XL benchmarking protocol: every result shows it).
* The **label-noise floor** is the MAE a perfect model would still show, because the labels
  themselves carry measurement noise: for simulated ECGs the noise that was added to exact labels
  (`ecgtune data simulate --label-noise`), for PTB-XL+ the disagreement between its measurement
  algorithms. A store records it in `provenance["label_noise_floor"]` when its source knows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecgtune.data.store import ECGStore
from ecgtune.targets import check_targets
from ecgtune.train import errors_in_units

FLOOR_KEY = "label_noise_floor"


def mean_predictor(store: ECGStore, split: str, targets: Sequence[str]) -> dict[str, float]:
    """Per-target MAE (bpm/ms) on `split` of predicting each target's training mean, and its `objective`.

    Reads labels only: the signals of `split` are never opened.
    """
    names = list(check_targets(list(targets)))
    train = store.split_labels("train")[names].to_numpy(dtype=np.float64)
    truth = store.split_labels(split)[names].to_numpy(dtype=np.float64)
    pred = np.broadcast_to(np.nanmean(train, axis=0), truth.shape)
    ev = errors_in_units(pred, truth, names)
    return {**ev.mae, "objective": ev.objective}


def label_noise_floor(store: ECGStore, split: str, targets: Sequence[str]) -> dict[str, float] | None:
    """Per-target MAE a perfect model would show on `split`'s labels, or None where the source does not
    know its label noise (`provenance["label_noise_floor"][split]`)."""
    floor = (store.provenance.get(FLOOR_KEY) or {}).get(split)
    if not isinstance(floor, dict):
        return None
    return {t: float(floor[t]) for t in targets if floor.get(t) is not None}

"""The backbone key: a hash of exactly what a pretrained backbone depends on, and nothing else.

A run's pretraining stage (`ecgtune.stages.TwoStageRun`, epochs 1..P) reads only:
- the network: every constructor argument of the model (`ecgtune.models.model_arguments`: a preset and
  the same knobs written out are one network), its outputs being one per target;
- the pretraining stage's settings: every field of `stages.pretrain` (epochs, batch size, lr, weight
  decay, schedule, warm-up, clipping, loss, samples per epoch, freezing, AMP, compile, eval batch size);
- the pretraining store's content key (`ECGStore.key`: its ECGs, labels and splits), not its path;
- the targets, in canonical order (they pick the label columns and the head's width);
- the spec's seed (weights' initialisation, batch order, dropout);
- `BACKBONE_FORMAT`, the version of the code that turns those into weights.

Everything else in a spec (fine-tuning settings, `transfer.*`, the fine-tuning store, search, resources,
run, name) cannot change the weights after the last pretraining epoch: tests/test_backbone_key.py walks
every key a spec can hold and proves it, training a tiny backbone with each one changed.

The fine-tuning store is not in the key even though pretraining epochs read their PTB-XL validation
fold out zero-shot: those read-outs are metrics, not weights. An entry records which store they were
measured on (`Backbone.readout_store`), and a trial fine-tuning on another store reads its own
(`ecgtune.stages.TwoStageRun.start_from`).

Hardware is not in the key either: a GPU and a CPU, or two thread counts, round differently, but train
the same backbone; where it was trained is in the entry's provenance.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ecgtune.models import model_arguments
from ecgtune.spec import Spec
from ecgtune.targets import check_targets

# Bump when a change to the pretraining code (train.py, stages.py, a model's layers or initialisation)
# makes the same settings train other weights: every older entry then stops matching any request.
BACKBONE_FORMAT = 1


def key_material(spec: Spec, pretrain_store_key: str) -> dict[str, Any]:
    """What a run of `spec` pretrains from, as canonical JSON-ready data (see the module docstring)."""
    if spec.data.pretrain is None or not spec.pretrain_epochs:
        raise ValueError(f"spec {spec.name!r} does not pretrain: it has no backbone to key")
    return _canonical(
        {
            "format": BACKBONE_FORMAT,
            "model": model_arguments(spec.network_config()),
            "pretrain": spec.stages.pretrain.model_dump(mode="json"),
            "pretrain_store": pretrain_store_key,
            "targets": list(check_targets(spec.targets)),
            "seed": spec.seed,
        }
    )


def backbone_key(material: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the material: short enough to read in a console line. An entry
    also holds its whole material, and a lookup compares it, so a collision is refused, not loaded."""
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    """Numbers that are whole as ints (dropout 0 and 0.0 are one network), tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value

"""Model registry: one way to build a model, by family or preset name, with typed overrides.

Every model maps float32 millivolts `(B, 8, 5000)` (leads `ecgtune.targets.LEADS`, 500 Hz, 10 s) to
`(B, num_outputs)`, one column per predicted target (standardisation is the training loop's job). Every
model has `forward_features(x) -> (B, F)`, a linear `head` (every other parameter is the backbone) and
`reset_head(num_outputs)`, so pretraining -> fine-tuning needs no surgery.

    create_model("resnet_paper")                       # the study's ResNet as its code ran
    create_model("vit_tiny", depth=3, dropout=None)    # None keeps the preset's value
    build_model({"name": "resnet", "block_kernel": 9}) # a config mapping, e.g. from a checkpoint
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ecgtune.models.fc import FC_PRESETS, FCNet
from ecgtune.models.resnet import RESNET_PRESETS, ResNet1d
from ecgtune.models.vit import VIT_PRESETS, ECGViT
from ecgtune.targets import LEADS, N_SAMPLES

__all__ = [
    "MODEL_FAMILIES",
    "PRESETS",
    "ECGViT",
    "FCNet",
    "ResNet1d",
    "build_model",
    "count_parameters",
    "create_model",
    "flops_per_ecg",
    "model_arguments",
    "model_names",
]

MODEL_FAMILIES: dict[str, type[nn.Module]] = {"resnet": ResNet1d, "vit": ECGViT, "fc": FCNet}

# preset name -> (family, constructor keyword arguments)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: ("resnet", kwargs) for name, kwargs in RESNET_PRESETS.items()},
    **{name: ("vit", kwargs) for name, kwargs in VIT_PRESETS.items()},
    **{name: ("fc", kwargs) for name, kwargs in FC_PRESETS.items()},
}


def model_names() -> list[str]:
    """Every name `create_model` accepts: the families, then the presets."""
    return [*MODEL_FAMILIES, *PRESETS]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a model by family name (constructor defaults) or preset name (the preset's values).

    Overrides win over the preset; an override that is None keeps the default. Overrides go to the
    constructor as they are, so a misspelt one fails there with a TypeError naming it.
    """
    if name in MODEL_FAMILIES:
        cls, kwargs = MODEL_FAMILIES[name], {}
    elif name in PRESETS:
        family, kwargs = PRESETS[name]
        cls = MODEL_FAMILIES[family]
    else:
        raise ValueError(f"unknown model {name!r}; known names: {model_names()}")
    kwargs = {**kwargs, **{key: value for key, value in overrides.items() if value is not None}}
    return cls(**kwargs)


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """`create_model(config["name"], **rest)`: build from a mapping such as a checkpoint's metadata."""
    if "name" not in config:
        raise ValueError(f"model config needs a 'name' (one of {model_names()}); got keys {sorted(config)}")
    kwargs = dict(config)
    return create_model(kwargs.pop("name"), **kwargs)


def model_arguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """What `build_model(config)` builds, spelt out: the family and every constructor argument (the
    preset's values, the caller's overrides, the constructor's defaults). Two configs that build the
    same network give the same mapping (`resnet_paper` and `resnet` with its knobs; a knob written out at
    its default value or left out), with tuples as lists. The backbone key hashes it."""
    kwargs = dict(config)
    name = kwargs.pop("name")
    if name in MODEL_FAMILIES:
        family, preset = name, {}
    elif name in PRESETS:
        family, preset = PRESETS[name]
    else:
        raise ValueError(f"unknown model {name!r}; known names: {model_names()}")
    signature = inspect.signature(MODEL_FAMILIES[family])
    args = {k: p.default for k, p in signature.parameters.items() if p.default is not p.empty}
    args.update(preset)
    args.update({k: v for k, v in kwargs.items() if v is not None})
    return {"family": family, **{k: list(v) if isinstance(v, tuple) else v for k, v in sorted(args.items())}}


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or frozen."""
    return sum(p.numel() for p in model.parameters())


# On CPU, scaled_dot_product_attention dispatches to an op FlopCounterMode has no formula for, and the
# attention matmuls would be counted as zero; give it the formula the GPU kernels already use.
def _sdpa_flops(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_SDPA_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CUSTOM_FLOPS = {_SDPA_CPU: _sdpa_flops} if _SDPA_CPU is not None else {}


def flops_per_ecg(model: nn.Module) -> int:
    """FLOPs of one forward pass on one ECG `(1, 8, 5000)`, in eval mode, as FlopCounterMode counts them.

    That is matrix multiplies and convolutions (2 FLOPs per multiply-add), attention included;
    normalisation, activations and pooling are not counted. The model's train/eval mode is restored.
    """
    in_channels = getattr(model, "in_channels", len(LEADS))
    signal_length = getattr(model, "signal_length", N_SAMPLES)
    param = next(model.parameters(), None)
    x = torch.zeros(1, in_channels, signal_length, device=param.device if param is not None else None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())

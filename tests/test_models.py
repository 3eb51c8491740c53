"""Model tests. Most are generated from the registry (timm's habit): a new preset is tested for free.

Parameter and FLOP counts are checked against numbers derived here by hand from the architecture, not
against what the code printed.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ecgtune.models.fc as fc_module
import ecgtune.models.resnet as resnet_module
import ecgtune.models.vit as vit_module
from ecgtune.models import (
    MODEL_FAMILIES,
    PRESETS,
    ECGViT,
    FCNet,
    ResNet1d,
    build_model,
    count_parameters,
    create_model,
    flops_per_ecg,
    model_names,
)
from ecgtune.models.resnet import ResidualBlock
from ecgtune.models.vit import Attention
from ecgtune.targets import LEADS, N_SAMPLES
from ecgtune.train import set_backbone_trainable

# The ResNet's even kernels (8 in the stem is "valid", but 50 in the modules is "same") trigger PyTorch's
# documented once-per-process warning about the padded copy; it is expected here (see resnet.py).
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

PAPER = sorted(name for name in PRESETS if "_paper" in name)
SMALL = sorted(name for name in PRESETS if name not in PAPER)
K = 4  # outputs: one per target (hr, pr, qrs, qt)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def ecg(batch: int = 2) -> torch.Tensor:
    """Random millivolt-scale ECGs, (batch, 8, 5000)."""
    return 0.5 * torch.randn(batch, len(LEADS), N_SAMPLES)


def on_meta(name: str) -> nn.Module:
    """Build a preset without allocating or initialising weights: enough to count its parameters."""
    with torch.device("meta"):
        return create_model(name)


# Measured on 2 shared CPU cores: vit_paper takes ~4 s to initialise 85 M weights and ~4 s to forward.
SLOW_FORWARD = {"vit_paper"}


# ----------------------------------------------------------------------------- generated from registry


def test_registry_is_consistent() -> None:
    assert set(MODEL_FAMILIES) == {"resnet", "vit", "fc"}
    assert set(PRESETS) >= {
        "resnet_paper",
        "resnet_paper_k3",
        "resnet_tiny",
        "vit_paper",
        "vit_tiny",
        "fc_paper",
        "fc_tiny",
    }
    assert model_names() == [*MODEL_FAMILIES, *PRESETS]
    for family, kwargs in PRESETS.values():
        assert family in MODEL_FAMILIES
        # A preset may only set knobs the constructor has (checked without building anything).
        assert set(kwargs) <= set(inspect.signature(MODEL_FAMILIES[family]).parameters)


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
def test_family_defaults_are_the_paper_preset(family: str) -> None:
    params = inspect.signature(MODEL_FAMILIES[family]).parameters
    _, kwargs = PRESETS[f"{family}_paper"]
    assert {key: params[key].default for key in kwargs} == kwargs


@pytest.mark.parametrize("name", SMALL)
def test_forward_shape_and_finite(name: str) -> None:
    model = create_model(name)
    out = model(ecg(2))
    assert out.shape == (2, K)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    features = model.forward_features(ecg(2))
    assert features.shape == (2, model.num_features)
    assert model.head.in_features == model.num_features


@pytest.mark.parametrize("name", SMALL)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = create_model(name).train()
    model(ecg(2)).square().mean().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {param_name}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {param_name}"
    # Not asserted: a non-zero gradient. A conv bias followed by BatchNorm is cancelled by the mean
    # subtraction, so its gradient is zero up to rounding (the ResNet keeps those biases to match the study).


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FORWARD else n for n in PAPER]
)
def test_paper_preset_forward_once(name: str) -> None:
    # Big models: one ECG, eval mode, no backward (training them is the sweep's job, not a unit test's).
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(ecg(1))
    assert out.shape == (1, K)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SMALL)
def test_reset_head_changes_width_and_keeps_backbone(name: str) -> None:
    model = create_model(name).eval()
    x = ecg(2)
    backbone_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    with torch.no_grad():
        features_before = model.forward_features(x)
        model.reset_head(2)
        out = model(x)
        features_after = model.forward_features(x)
    assert out.shape == (2, 2)
    assert model.head.out_features == 2
    backbone_after = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert backbone_after.keys() == backbone_before.keys()
    for key, value in backbone_before.items():
        assert torch.equal(backbone_after[key], value), key
    torch.testing.assert_close(features_after, features_before, rtol=0, atol=0)


@pytest.mark.parametrize("name", SMALL)
def test_freezing_the_backbone_leaves_only_the_head_trainable(name: str) -> None:
    """What `freeze_backbone_epochs` and `load_backbone` rely on: `head.*` is the whole head."""
    model = create_model(name)
    set_backbone_trainable(model, False)
    names = [n for n, _ in model.named_parameters()]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [n for n in names if n.startswith("head.")] and 0 < len(trainable) < len(names)


# ------------------------------------------------------------------------------- shapes over knobs


@pytest.mark.parametrize("block_kernel", [1, 2, 3, 4, 7, 8, 50])
@pytest.mark.parametrize("num_blocks", [0, 1, 3])
def test_resnet_shapes_over_kernels_and_depth(block_kernel: int, num_blocks: int) -> None:
    model = ResNet1d(
        stem_widths=(8, 4),
        block_widths=(8, 4),
        num_blocks=num_blocks,
        block_kernel=block_kernel,
        num_outputs=3,
    )
    assert model(ecg(2)).shape == (2, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(stem_widths=(6,), stem_kernels=(5,), block_widths=(6,)),  # one-conv stem and modules
        dict(stem_widths=(4, 8, 6), stem_kernels=(7, 5, 3), block_widths=(12, 8, 6)),
        dict(pool="max", pool_size=4),
        dict(pool="none"),
        dict(pool="avg", pool_size=1, negative_slope=0.0, dropout=0.5, block_dropout=0.2),
    ],
)
def test_resnet_shapes_over_widths_and_pooling(kwargs: dict) -> None:
    defaults = dict(stem_widths=(8, 4), block_widths=(8, 4), num_blocks=2, block_kernel=5)
    model = ResNet1d(**{**defaults, **kwargs})
    assert model(ecg(2)).shape == (2, 4)


@pytest.mark.parametrize("kernel", [2, 4, 8, 50])
def test_even_kernel_same_padding_puts_the_extra_zero_on_the_right(kernel: int) -> None:
    # Length kept, and the result equals an explicit asymmetric pad of (k-1)//2 left, k//2 right -- the
    # convention of Keras "same", which the study's reference network was written in.
    block = ResidualBlock(3, (5, 3), kernel, negative_slope=0.1, dropout=0.0)
    conv = block.convs[0][0]
    x = torch.randn(2, 3, 61)
    expected = F.conv1d(F.pad(x, ((kernel - 1) // 2, kernel // 2)), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), expected)
    assert block(x).shape == x.shape


def test_resnet_lengths_follow_the_study() -> None:
    # Unpadded stem: 5000 - 7 = 4993 after k=8, - 2 = 4991 after k=3, // 2 = 2495 after the pool.
    model = create_model("resnet_tiny")
    stem_out = model.stem(ecg(1))
    assert stem_out.shape[-1] == 4991
    assert model.pool(stem_out).shape[-1] == 2495


@pytest.mark.parametrize("patch_size", [10, 25, 50, 125, 250, 1000, 5000])
def test_vit_shapes_over_patch_sizes(patch_size: int) -> None:
    model = ECGViT(patch_size=patch_size, embed_dim=16, depth=1, num_heads=2, num_outputs=3)
    assert model.pos_embed.shape == (1, 1 + N_SAMPLES // patch_size, 16)
    assert model(ecg(2)).shape == (2, 3)


@pytest.mark.parametrize(("embed_dim", "num_heads"), [(16, 1), (24, 3), (32, 8)])
@pytest.mark.parametrize("depth", [1, 3])
def test_vit_shapes_over_width_heads_depth(embed_dim: int, num_heads: int, depth: int) -> None:
    model = ECGViT(
        patch_size=250,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=2.0,
        dropout=0.1,
        attn_dropout=0.1,
    )
    assert len(model.blocks) == depth
    assert model(ecg(2)).shape == (2, 4)


@pytest.mark.parametrize("hidden_sizes", [(), (8,), (16, 8), (4, 4, 4)])
def test_fc_shapes_over_hidden_sizes(hidden_sizes: tuple[int, ...]) -> None:
    model = FCNet(hidden_sizes=hidden_sizes, dropout=0.3)
    assert model(ecg(2)).shape == (2, 4)
    assert model.forward_features(ecg(2)).shape == (2, hidden_sizes[-1] if hidden_sizes else 8 * 5000)


@pytest.mark.parametrize("name", ["resnet_tiny", "vit_tiny", "fc_tiny"])
def test_one_output_and_batch_of_one_keep_their_axes(name: str) -> None:
    # The study's models squeeze their output, which turns a batch of one into a scalar; these don't.
    assert create_model(name, num_outputs=1)(ecg(2)).shape == (2, 1)
    assert create_model(name).eval()(ecg(1)).shape == (1, K)


# ------------------------------------------------------------------------------ rejected configs


@pytest.mark.parametrize("patch_size", [7, 3, 0, 6000])
def test_vit_rejects_patch_size_that_does_not_divide_5000(patch_size: int) -> None:
    with pytest.raises(ValueError, match="patch_size") as excinfo:
        create_model("vit_tiny", patch_size=patch_size)
    assert "[1, 2, 4, 5, 8, 10, 20, 25, 40, 50, " in str(excinfo.value)  # the allowed divisors are listed


def test_vit_rejects_heads_that_do_not_divide_width() -> None:
    with pytest.raises(ValueError, match=r"embed_dim \(30\).*num_heads \(4\)"):
        create_model("vit_tiny", embed_dim=30, num_heads=4)


@pytest.mark.parametrize(
    ("name", "bad_key"), [("vit_tiny", "patchsize"), ("resnet_tiny", "num_blokcs"), ("fc", "hiden_sizes")]
)
def test_misspelt_override_reaches_the_constructor_and_fails_naming_it(name: str, bad_key: str) -> None:
    with pytest.raises(TypeError, match=bad_key):
        create_model(name, **{bad_key: 3})
    with pytest.raises(TypeError, match=bad_key):
        build_model({"name": name, bad_key: 3})


def test_unknown_model_name_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="resnet50") as excinfo:
        create_model("resnet50")
    for name in model_names():
        assert repr(name) in str(excinfo.value)


def test_build_model_needs_a_name() -> None:
    with pytest.raises(ValueError, match="'name'"):
        build_model({"depth": 2})


@pytest.mark.parametrize(
    ("kwargs", "knob"),
    [
        (dict(stem_widths=(16, 16), block_widths=(16, 8)), "block_widths"),
        (dict(stem_widths=(16, 16), stem_kernels=(3,)), "stem_kernels"),
        (dict(pool="median"), "pool"),
        (dict(pool_size=0), "pool_size"),
        (dict(block_kernel=0), "block_kernel"),
        (dict(num_blocks=-1), "num_blocks"),
    ],
)
def test_resnet_rejects_impossible_configs_naming_the_knob(kwargs: dict, knob: str) -> None:
    with pytest.raises(ValueError, match=knob):
        ResNet1d(**kwargs)


def test_vit_rejects_zero_depth_and_fc_rejects_empty_layer() -> None:
    with pytest.raises(ValueError, match="depth"):
        create_model("vit_tiny", depth=0)
    with pytest.raises(ValueError, match="hidden_sizes"):
        create_model("fc_tiny", hidden_sizes=(8, 0))


def test_constructors_take_keywords_only() -> None:
    with pytest.raises(TypeError):
        ResNet1d(8, 4)  # type: ignore[misc]


# ---------------------------------------------------------------------------- registry behaviour


def test_overrides_win_and_none_keeps_the_default() -> None:
    assert len(create_model("resnet_tiny", num_blocks=2).blocks) == 2
    assert len(create_model("resnet_tiny", num_blocks=None).blocks) == 4  # the preset's value
    assert len(create_model("vit_tiny", depth=None, dropout=None).blocks) == 2
    model = build_model({"name": "vit_tiny", "depth": 3, "num_outputs": None})
    assert len(model.blocks) == 3 and model.head.out_features == K


def test_family_name_builds_with_constructor_defaults() -> None:
    model = create_model("resnet", block_kernel=3)  # family defaults are the paper's; k=3 keeps it small
    assert isinstance(model, ResNet1d)
    assert count_parameters(model) == count_parameters(create_model("resnet_paper_k3"))


# ------------------------------------------------------------------------- attention is per head


def _reference_attention(attn: Attention, x: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v per head, written out with plain matmuls from the module's weights."""
    B, T, D = x.shape
    H, d = attn.num_heads, D // attn.num_heads
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(D, dim=-1)  # 3 x (B, T, D)
    q, k, v = (t.reshape(B, T, H, d).transpose(1, 2) for t in (q, k, v))  # 3 x (B, H, T, d)
    weights = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)  # (B, H, T, T)
    out = (weights @ v).transpose(1, 2).reshape(B, T, D)  # (B, T, D)
    return out @ attn.proj.weight.T + attn.proj.bias


def test_attention_scales_by_head_dim_not_embed_dim() -> None:
    dim, heads = 32, 8  # head_dim 4: 1/sqrt(4) = 0.5 vs the study's 1/sqrt(32) = 0.177
    attn = Attention(dim, heads, qkv_bias=True, attn_dropout=0.0, dropout=0.0).double().eval()
    for p in attn.parameters():  # larger weights than the init, so the softmax is far from uniform
        nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 7, dim, dtype=torch.float64)
    with torch.no_grad():
        out = attn(x)
        per_head = _reference_attention(attn, x, 1 / math.sqrt(dim // heads))
        per_model = _reference_attention(attn, x, 1 / math.sqrt(dim))
    torch.testing.assert_close(out, per_head, rtol=1e-10, atol=1e-10)
    assert (out - per_model).abs().max() > 1e-2  # the study's scaling gives a clearly different answer


def test_vit_blocks_use_that_attention() -> None:
    model = create_model("vit_tiny")
    assert all(isinstance(block.attn, Attention) for block in model.blocks)
    assert model.blocks[0].attn.scale == (32 // 4) ** -0.5


# ------------------------------------------------------------------- parameter counts, by hand


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k + c_out  # weight + bias


def bn_params(c: int) -> int:
    return 2 * c  # affine weight + bias (running stats are buffers)


def linear_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def resnet_params(k: int) -> int:
    """The study's network: stem 8->64 (k=8) ->32 (k=3); 8 modules 32->64->32 with kernel k; head 32->4."""
    stem = conv_params(8, 64, 8) + bn_params(64) + conv_params(64, 32, 3) + bn_params(32)  # 10,528
    module = conv_params(32, 64, k) + bn_params(64) + conv_params(64, 32, k) + bn_params(32)  # 4096 k + 288
    return stem + 8 * module + linear_params(32, K)


def vit_params(patch: int = 50, dim: int = 768, depth: int = 12, mlp_ratio: int = 4) -> int:
    tokens = 1 + N_SAMPLES // patch
    embed = conv_params(8, dim, patch) + dim + tokens * dim  # patch projection, class token, positions
    block = (
        2 * bn_params(dim)  # two LayerNorms, weight + bias each
        + linear_params(dim, 3 * dim)  # qkv
        + linear_params(dim, dim)  # output projection
        + linear_params(dim, mlp_ratio * dim)
        + linear_params(mlp_ratio * dim, dim)
    )  # = 12 dim^2 + 13 dim for mlp_ratio 4
    return embed + depth * block + bn_params(dim) + linear_params(dim, K)


def fc_params() -> int:
    return (
        linear_params(8 * 5000, 1000)
        + linear_params(1000, 1000)
        + linear_params(1000, 500)
        + linear_params(500, K)
    )


EXPECTED_PARAMS = {
    "resnet_paper": (resnet_params(50), 1_651_364, resnet_module),
    "resnet_paper_k3": (resnet_params(3), 111_268, resnet_module),
    "vit_paper": (vit_params(), 85_445_380, vit_module),
    "fc_paper": (fc_params(), 41_504_504, fc_module),
}


def test_every_paper_preset_has_an_expected_count() -> None:
    assert set(EXPECTED_PARAMS) == set(PAPER)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_paper_parameter_counts(name: str) -> None:
    by_hand, documented, module = EXPECTED_PARAMS[name]
    assert by_hand == documented
    assert count_parameters(on_meta(name)) == documented
    assert f"{documented:,}" in module.__doc__  # the docstring states the same number


def test_tiny_parameter_counts_are_tiny() -> None:
    counts = {name: count_parameters(create_model(name)) for name in SMALL}
    assert counts["resnet_tiny"] == 16_676
    assert counts["vit_tiny"] == 52_900
    assert counts["fc_tiny"] == 1_280_164


# -------------------------------------------------------------------------------------------- FLOPs


def test_flops_match_hand_counts_and_include_attention() -> None:
    # 2 FLOPs per multiply-add. vit_tiny: 50 patches of 100 samples, 51 tokens of width 32, 4 heads of 8.
    T, D, H, d = 51, 32, 4, 8
    patch = 2 * 50 * D * (8 * 100)
    linears = 2 * T * (D * 3 * D + D * D + 2 * D * 4 * D)
    attention = 2 * (2 * H * T * T * d)  # q k^T and weights @ v
    assert flops_per_ecg(create_model("vit_tiny")) == patch + 2 * (linears + attention) + 2 * D * K

    # resnet_paper_k3: stem lengths 4993, 4991; 16 module convs over 2495 samples.
    stem = 2 * 8 * 64 * 8 * 4993 + 2 * 64 * 32 * 3 * 4991
    modules = 16 * (2 * 32 * 64 * 3 * 2495)
    assert flops_per_ecg(create_model("resnet_paper_k3")) == stem + modules + 2 * 32 * K

    assert flops_per_ecg(create_model("fc_tiny")) == 2 * (8 * 5000 * 32 + 32 * K)


def test_flops_grow_with_the_model_and_leave_mode_alone() -> None:
    tiny = create_model("vit_tiny").train()
    assert flops_per_ecg(tiny) > 0
    assert tiny.training  # restored after the eval-mode count
    assert flops_per_ecg(create_model("vit_tiny", depth=4)) > flops_per_ecg(tiny)
    assert flops_per_ecg(create_model("resnet_paper_k3")) > flops_per_ecg(create_model("resnet_tiny"))
    assert flops_per_ecg(create_model("fc_paper")) > flops_per_ecg(create_model("fc_tiny"))

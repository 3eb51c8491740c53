"""Vision Transformer for 8-lead ECGs: `(B, 8, 5000)` millivolts -> `(B, num_outputs)`.

After Dosovitskiy et al. 2021 ("An image is worth 16x16 words"), cut in 1-D as in the Peradeniya/Simula
DeepFake-ECG study (github.com/cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-
accelerators, `python-scripts-transformer/VisionTransformer.py`, `PatchEmbed.py`, `Block.py`,
`Attention.py`, `MLP.py`; run by `Main.py` with patch 50, width 768, depth 12, 12 heads, MLP ratio 4,
qkv bias, no dropout, LayerNorm eps 1e-6): a strided Conv1d cuts the signal into 5000 / patch_size tokens,
a class token and learned positional embeddings are added, pre-norm blocks follow, and a linear head
reads the final-normed class token.

One deliberate difference: the study's attention scales q k^T by dim ** -0.5 with dim the full embedding
width (768), not the head width (64) -- a sqrt(12)-times softer softmax than the transformer it cites.
Here attention runs through `scaled_dot_product_attention` with scale head_dim ** -0.5 (Vaswani et al.
2017, eq. 1). The study also starts the class token and positional embeddings at zero; they are drawn
from a truncated normal (std 0.02) here, as in timm.

`vit_paper` has 85,445,380 parameters with 4 outputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------- blocks


class PatchEmbed(nn.Module):
    """Non-overlapping patches of all leads, each projected to `embed_dim` by one strided conv."""

    def __init__(self, in_channels: int, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, 8, 5000) -> (B, D, 100)
        return x.transpose(1, 2)  # (B, D, 100) -> (B, 100, D)


class Attention(nn.Module):
    """Multi-head self-attention, softmax(q k^T / sqrt(head_dim)) v, through PyTorch's fused kernel."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_dropout: float, dropout: float) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # Per head, not per model: the study's dim ** -0.5 was the bug this replaces.
        self.scale = self.head_dim**-0.5
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim)  # (B, T, D) -> (B, T, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, d)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0, scale=self.scale
        )  # (B, H, T, d)
        x = x.transpose(1, 2).reshape(B, T, D)  # (B, H, T, d) -> (B, T, D)
        return self.proj_drop(self.proj(x))


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, dropout: float, attn_dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_dropout, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, 101, D)
        return x + self.mlp(self.norm2(x))  # (B, 101, D)


# ----------------------------------------------------------------------------------------------- model


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class ECGViT(nn.Module):
    """Patch embedding, class token, learned positions, `depth` pre-norm blocks, LayerNorm, linear head.

    Defaults are the study's configuration (`vit_paper`). `patch_size` must divide `signal_length`
    (no token may straddle the end of the recording) and `num_heads` must divide `embed_dim`.
    """

    def __init__(
        self,
        *,
        signal_length: int = 5000,
        in_channels: int = 8,
        num_outputs: int = 4,
        patch_size: int = 50,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if patch_size < 1 or signal_length % patch_size != 0:
            raise ValueError(
                f"patch_size={patch_size} must divide signal_length={signal_length}; "
                f"allowed patch_size values: {_divisors(signal_length)}"
            )
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})"
            )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.in_channels = in_channels
        self.signal_length = signal_length
        self.num_features = embed_dim
        num_patches = signal_length // patch_size

        self.patch_embed = PatchEmbed(in_channels, patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *[Block(embed_dim, num_heads, mlp_ratio, qkv_bias, dropout, attn_dropout) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_outputs)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's ViT init: truncated normal (std 0.02) for tokens, positions and linear weights, zero biases.
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, 8, 5000) -> (B, 100, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (1, 1, D) -> (B, 1, D)
        x = torch.cat((cls, x), dim=1) + self.pos_embed  # (B, 101, D)
        x = self.blocks(self.pos_drop(x))  # (B, 101, D)
        return self.norm(x)[:, 0]  # class token: (B, 101, D) -> (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))  # (B, D) -> (B, num_outputs)

    def reset_head(self, num_outputs: int) -> None:
        """Replace the linear head with a freshly initialised one; the backbone is untouched."""
        self.head = nn.Linear(self.num_features, num_outputs)


# --------------------------------------------------------------------------------------------- presets

VIT_PRESETS: dict[str, dict[str, Any]] = {
    # The study's configuration (python-scripts-transformer/Main.py): 85,445,380 parameters (4 outputs).
    "vit_paper": dict(patch_size=50, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    # For tests and smoke runs: 50 tokens of 0.2 s, 52,900 parameters (4 outputs).
    "vit_tiny": dict(patch_size=100, embed_dim=32, depth=2, num_heads=4, mlp_ratio=4.0),
}

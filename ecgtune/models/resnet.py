"""1-D residual network for 8-lead, 10 s, 500 Hz ECGs: `(B, 8, 5000)` millivolts -> `(B, num_outputs)`.

After the "KanResWide_X2" network of Hicks et al. 2021 ("Explaining deep neural networks for knowledge
discovery in electrocardiogram analysis", Sci Rep 11:10949), as re-implemented in PyTorch by the
Peradeniya/Simula DeepFake-ECG study (github.com/cepdnaclk/
e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-accelerators, `python-scripts-resnet/
KanResWide_X2.py`, `KanResInit.py`, `KanResModule.py`; `streamlitApp/` holds the deployed copy).

Layer order, read from the study's code:
  stem    conv(8->64, k=8) BN act, conv(64->32, k=3) BN act     unpadded ("valid"): 5000 -> 4993 -> 4991
  pool    AvgPool1d(2)                                          4991 -> 2495
  8 x     conv(32->64, k) BN act, conv(64->32, k) BN act, + x   "same" padding, length kept
  head    global average pool over time, linear(32 -> num_outputs)

Activations: the study's stem moved from ReLU to LeakyReLU(0.1), its deployed copy uses LeakyReLU(0.1) in
the residual modules too, while the training scripts' modules kept ReLU. ecgtune uses one `negative_slope`
everywhere (0.1 by default; 0.0 gives ReLU). The deployed copy also puts Dropout(0.5) inside each module,
before the add (`block_dropout` here, 0.0 in the presets).

Kernel inside the residual modules: the study's paper text says 3, its code runs 50 (100 ms at 500 Hz).
`resnet_paper` is the code as it ran (k=50, 1,651,364 parameters with 4 outputs); `resnet_paper_k3` is the
paper text (k=3, 111,268 parameters).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

# ---------------------------------------------------------------------------------------------- blocks


class ConvBNAct(nn.Sequential):
    """Conv1d -> BatchNorm1d -> LeakyReLU.

    The conv keeps its bias although BatchNorm cancels it: the study's network has it, and the
    `resnet_paper` parameter count reproduces that.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: str, negative_slope: float
    ) -> None:
        super().__init__(
            # padding="same" with an even kernel cannot split the k-1 padding evenly: PyTorch (like Keras)
            # puts the extra zero on the right, and to do so builds a zero-padded copy of the input and
            # warns once. Odd kernels pad symmetrically inside the conv and avoid the copy.
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding),
            nn.BatchNorm1d(out_channels),
            nn.LeakyReLU(negative_slope),
        )


class ResidualBlock(nn.Module):
    """Same-padded convs widths[0] -> ... -> widths[-1], each with BN and activation, then `+ x`.

    Order as in the study's KanResModule: the activation comes before the add and none after it.
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...],
        kernel_size: int,
        negative_slope: float,
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers.append(ConvBNAct(channels, width, kernel_size, "same", negative_slope))
            channels = width
        self.convs = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.convs(x))  # (B, 32, 2495) -> (B, 64, 2495) -> (B, 32, 2495)


# ----------------------------------------------------------------------------------------------- model


class ResNet1d(nn.Module):
    """Stem of unpadded convs, one pooling, `num_blocks` residual modules, global average pool, linear head.

    Defaults are the study's code (`resnet_paper`). `block_widths[-1]` must equal `stem_widths[-1]`, since
    each module adds its input back. The network is length-agnostic; `signal_length` is recorded only so
    callers (e.g. FLOP counting) know the input the model was built for.
    """

    def __init__(
        self,
        *,
        in_channels: int = 8,
        num_outputs: int = 4,
        signal_length: int = 5000,
        stem_widths: tuple[int, ...] = (64, 32),
        stem_kernels: tuple[int, ...] = (8, 3),
        pool: Literal["avg", "max", "none"] = "avg",
        pool_size: int = 2,
        block_widths: tuple[int, ...] = (64, 32),
        num_blocks: int = 8,
        block_kernel: int = 50,
        block_dropout: float = 0.0,
        dropout: float = 0.0,
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        stem_widths, stem_kernels, block_widths = tuple(stem_widths), tuple(stem_kernels), tuple(block_widths)
        if not stem_widths or len(stem_widths) != len(stem_kernels):
            raise ValueError(
                f"stem_widths {stem_widths} and stem_kernels {stem_kernels} must be non-empty, equally long"
            )
        if not block_widths or block_widths[-1] != stem_widths[-1]:
            raise ValueError(
                f"block_widths[-1] must equal stem_widths[-1] so the residual add matches channels; "
                f"got block_widths={block_widths}, stem_widths={stem_widths}"
            )
        if pool not in ("avg", "max", "none"):
            raise ValueError(f"pool must be 'avg', 'max' or 'none', got {pool!r}")
        for knob, value in [
            ("pool_size", pool_size),
            ("block_kernel", block_kernel),
            ("num_outputs", num_outputs),
        ]:
            if value < 1:
                raise ValueError(f"{knob} must be >= 1, got {value}")
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.in_channels = in_channels
        self.signal_length = signal_length

        stem: list[nn.Module] = []
        channels = in_channels
        for width, kernel in zip(stem_widths, stem_kernels, strict=True):
            stem.append(ConvBNAct(channels, width, kernel, "valid", negative_slope))
            channels = width
        self.stem = nn.Sequential(*stem)
        if pool == "avg":
            self.pool: nn.Module = nn.AvgPool1d(pool_size)
        elif pool == "max":
            self.pool = nn.MaxPool1d(pool_size)
        else:
            self.pool = nn.Identity()
        self.blocks = nn.Sequential(
            *[
                ResidualBlock(channels, block_widths, block_kernel, negative_slope, block_dropout)
                for _ in range(num_blocks)
            ]
        )
        self.num_features = channels
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_outputs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 8, 5000) -> (B, 64, 4993) -> (B, 32, 4991)
        x = self.pool(x)  # (B, 32, 4991) -> (B, 32, 2495)
        x = self.blocks(x)  # (B, 32, 2495) -> (B, 32, 2495)
        return x.mean(dim=-1)  # global average pool: (B, 32, 2495) -> (B, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x)))  # (B, 32) -> (B, num_outputs)

    def reset_head(self, num_outputs: int) -> None:
        """Replace the linear head with a freshly initialised one; the backbone is untouched."""
        self.head = nn.Linear(self.num_features, num_outputs)


# --------------------------------------------------------------------------------------------- presets

# Each preset fills constructor defaults; create_model's overrides win over them.
RESNET_PRESETS: dict[str, dict[str, Any]] = {
    # The study's code as it ran: kernel 50 in the residual modules. 1,651,364 parameters (4 outputs).
    "resnet_paper": dict(
        stem_widths=(64, 32), stem_kernels=(8, 3), block_widths=(64, 32), num_blocks=8, block_kernel=50
    ),
    # The study's paper text: kernel 3 in the residual modules. 111,268 parameters (4 outputs).
    "resnet_paper_k3": dict(
        stem_widths=(64, 32), stem_kernels=(8, 3), block_widths=(64, 32), num_blocks=8, block_kernel=3
    ),
    # For tests and smoke runs: 16,676 parameters (4 outputs).
    "resnet_tiny": dict(
        stem_widths=(16, 16), stem_kernels=(8, 3), block_widths=(16, 16), num_blocks=4, block_kernel=7
    ),
}

"""Fully-connected baseline: `(B, 8, 5000)` millivolts, flattened -> hidden layers -> `(B, num_outputs)`.

The Peradeniya/Simula DeepFake-ECG study's experiment 1 ("baseline model evaluation") used this network
(github.com/cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-accelerators,
`notebooks/DataLoader.ipynb`, class NeuralNetwork): Flatten, Linear(40000, 1000), ReLU, Linear(1000, 1000),
ReLU, Linear(1000, 500), ReLU, Linear(500, 1) -- one target per run there, `num_outputs` here. It has no
normalisation and no dropout; `dropout` (after each hidden activation) is an ecgtune knob, 0 in `fc_paper`.

It sees every sample as an unrelated input feature, so it cannot share what it learns about a QRS
complex across time: a floor for the convolutional and attention models, not a contender.
`fc_paper` has 41,504,504 parameters with 4 outputs, 96% of them in the first layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# ---------------------------------------------------------------------------------------------- blocks


class DenseReLU(nn.Sequential):
    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__(nn.Linear(in_features, out_features), nn.ReLU(), nn.Dropout(dropout))


# ----------------------------------------------------------------------------------------------- model


class FCNet(nn.Module):
    """Flatten all leads and samples, then `hidden_sizes` Linear-ReLU layers, then a linear head.

    With `hidden_sizes=()` it is linear regression on the raw samples.
    """

    def __init__(
        self,
        *,
        in_channels: int = 8,
        signal_length: int = 5000,
        num_outputs: int = 4,
        hidden_sizes: tuple[int, ...] = (1000, 1000, 500),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_sizes = tuple(hidden_sizes)
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must all be >= 1, got {hidden_sizes}")
        self.in_channels = in_channels
        self.signal_length = signal_length
        layers: list[nn.Module] = []
        features = in_channels * signal_length
        for width in hidden_sizes:
            layers.append(DenseReLU(features, width, dropout))
            features = width
        self.layers = nn.Sequential(*layers)
        self.num_features = features
        self.head = nn.Linear(features, num_outputs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, 8, 5000) -> (B, 40000), lead-major: all of lead I, then lead II, ...
        return self.layers(x)  # (B, 40000) -> (B, 500)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))  # (B, 500) -> (B, num_outputs)

    def reset_head(self, num_outputs: int) -> None:
        """Replace the linear head with a freshly initialised one; the backbone is untouched."""
        self.head = nn.Linear(self.num_features, num_outputs)


# --------------------------------------------------------------------------------------------- presets

FC_PRESETS: dict[str, dict[str, Any]] = {
    # The study's experiment-1 baseline: 41,504,504 parameters (4 outputs).
    "fc_paper": dict(hidden_sizes=(1000, 1000, 500)),
    # For tests and smoke runs: 1,280,164 parameters (4 outputs), nearly all in the 40000 x 32 layer.
    "fc_tiny": dict(hidden_sizes=(32,)),
}

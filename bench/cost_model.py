"""What a replayed epoch costs, in compute seconds, with each stage scaled to the shipped GPU sweep's
proportions (docs/benchmarks.md part 4).

The curve table is recorded at demo scale (3 pretraining epochs of 534 GAN ECGs, 9 fine-tuning epochs of
256 PTB-XL-like ECGs), where pretraining is a small part of a trial. The shipped `resnet_widths` sweep
pretrains each trial on 20 x 25,600 DeepFake ECGs and fine-tunes it for up to 30 epochs of the 17,418
ECGs of PTB-XL's folds 1-8, and every epoch of both stages evaluates PTB-XL's validation fold (2,183
ECGs) and DeepFake's (12,198): that is what makes pretraining about 85% of an ASHA-stopped trial. So a
replay charges each configuration what its architecture would spend on the shipped sweep's ECGs:

    pretraining   = P x (25,600 x train + 14,381 x eval)   spread over the table's 3 pretraining epochs
    fine-tuning   = F x (17,418 x train + 14,381 x eval)   spread over the table's 9 fine-tuning epochs

with P, F and the samples per epoch read from the shipped spec, and `train`, `eval` the seconds per ECG
of that architecture on one idle core (bench/epoch_timing.py), fitted linearly against its FLOPs
(`resnet_flops`, which equals ecgtune.models.flops_per_ecg for the table's ResNets). A trial that reuses
a stored backbone pays `load` instead of pretraining: reading the entry (bench/epoch_timing.py measures
it too; milliseconds beside hours).

One correction keeps the share the issue measured: ASHA stops trials earlier on the shipped sweep's clock
(rungs at fine-tuning epochs 2, 6, 18 of 30: an average trial fine-tunes 5.1 of 30 epochs, 17%) than the
table's 9-epoch clock allows (bench/curve_table.yaml's rungs 3 and 9: 5 of 9 epochs, 56%; earlier rungs
rank the table's configurations unlike their final objective). Charged as above, an average ASHA trial
would spend 61% of its compute pretraining on the table instead of the shipped sweep's 84%, and sharing
would be judged on a cheaper pretraining than it saves. So pretraining is charged `pretrain_scale`
(3.26) times its proportional cost, the factor that makes an average ASHA trial's pretraining share on
the table equal the shipped sweep's (`pretrain_share`). `--blackbox surrogate-proportional` replays
without it, as a sensitivity check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TIMING_FILE = Path(__file__).resolve().parent / "data" / "epoch_timing.json"
# PTB-XL: 21,799 records, strat_fold 1-8 train (17,418), 9 validation (2,183); DeepFake: 121,977 ECGs,
# 10% validation by ecgtune.data.store.assign_split_by_hash.
PTBXL_TRAIN, PTBXL_VAL, DEEPFAKE_VAL = 17_418, 2_183, 12_198


@dataclass(frozen=True)
class ShippedScale:
    """The shipped sweep's stage sizes: epochs, training ECGs per epoch, ECGs evaluated per epoch."""

    name: str
    pretrain_epochs: int
    pretrain_ecgs: int
    finetune_epochs: int
    finetune_ecgs: int
    finetune_fraction: float  # of its fine-tuning epochs an average trial trains under the sweep's ASHA
    eval_ecgs: int = PTBXL_VAL + DEEPFAKE_VAL


def shipped_scale(name: str = "resnet_widths") -> ShippedScale:
    from ecgtune.shipped import sweep_spec_path
    from ecgtune.spec import load_spec

    spec = load_spec(sweep_spec_path(name))
    pre, ft, asha = spec.stages.pretrain, spec.stages.finetune, spec.search.asha
    return ShippedScale(
        name,
        spec.pretrain_epochs,
        pre.samples_per_epoch or 121_977,
        ft.epochs,
        ft.samples_per_epoch or PTBXL_TRAIN,
        asha_mean_epochs(asha.grace_period, asha.reduction_factor, ft.epochs) / ft.epochs,
    )


def resnet_flops(config: Mapping[str, Any]) -> int:
    """FLOPs of one forward pass of the table's ResNet (stem 8 -> 16 -> stream, kernels 8 and 3, valid;
    pooling; residual modules stream -> inner -> stream, same padding; linear head), 2 per multiply-add:
    what torch's FlopCounterMode counts (tests/test_replay.py checks it against flops_per_ecg)."""
    inner, stream = config["model.block_widths.0"], config["model.block_widths.1"]
    blocks, kernel, pool = config["model.num_blocks"], config["model.block_kernel"], config["model.pool_size"]
    stem1 = 5000 - 8 + 1
    stem2 = stem1 - 3 + 1
    pooled = stem2 // pool
    macs = (
        stem1 * 16 * 8 * 8
        + stem2 * stream * 16 * 3
        + blocks * 2 * pooled * stream * inner * kernel
        + stream * 4
    )
    return 2 * macs


def asha_mean_epochs(grace: int, reduction_factor: float, max_t: int) -> float:
    """Fine-tuning epochs an average trial trains under one-bracket ASHA, if each rung keeps 1/eta of the
    trials that reach it: rungs at grace * eta^k below max_t, the survivors of the last to max_t."""
    rungs = []
    r = grace
    while r < max_t:
        rungs.append(r)
        r *= reduction_factor
    mean, reach = 0.0, 1.0
    for rung in rungs:
        mean += reach * (1 - 1 / reduction_factor) * rung
        reach /= reduction_factor
    return mean + reach * max_t


def pretrain_share(pretrain: float, finetune_full: float, finetune_fraction: float) -> float:
    """Pretraining's share of an average trial that fine-tunes `finetune_fraction` of its full length."""
    return pretrain / (pretrain + finetune_fraction * finetune_full)


@dataclass(frozen=True)
class StageCosts:
    """Seconds one replayed epoch of each stage costs, and loading a stored backbone."""

    pretrain_epoch: float
    finetune_epoch: float
    load: float

    def full_trial(self, pretrain_epochs: int, finetune_epochs: int) -> float:
        return pretrain_epochs * self.pretrain_epoch + finetune_epochs * self.finetune_epoch


class CostModel:
    """Seconds per ECG against FLOPs (least squares on the idle-core timings), scaled to `scale`."""

    def __init__(
        self,
        scale: ShippedScale,
        timing_file: Path = TIMING_FILE,
        recorded_pretrain_epochs: int = 3,
        recorded_finetune_epochs: int = 9,
        table_finetune_fraction: float | None = None,
    ):
        data = json.loads(Path(timing_file).read_text())
        rows = data["rows"]
        flops = np.array([r["flops_per_ecg"] for r in rows], dtype=float)
        self.scale = scale
        self.train_fit = _line(flops, np.array([r["train_s_per_ecg"] for r in rows]))
        self.eval_fit = _line(flops, np.array([r["eval_s_per_ecg"] for r in rows]))
        self.load_fit = tuple(data.get("load_fit", (0.005, 0.0)))  # seconds = a + b x bytes
        self.recorded = (recorded_pretrain_epochs, recorded_finetune_epochs)
        self.machine = data["machine"]
        # The median architecture's stage costs, for the shares (a ratio: the FLOPs fit's intercepts make
        # it vary a little with the architecture).
        train, evaluate = (
            float(np.median([r["train_s_per_ecg"] for r in rows])),
            float(np.median([r["eval_s_per_ecg"] for r in rows])),
        )
        self.pretrain_scale = 1.0
        pre, ft = self._stages(train, evaluate)
        self.shipped_share = pretrain_share(pre, ft, scale.finetune_fraction)
        if table_finetune_fraction is not None:
            proportional = pretrain_share(pre, ft, table_finetune_fraction)
            target = self.shipped_share
            self.pretrain_scale = (target / (1 - target)) * (table_finetune_fraction * ft) / pre
            self.table_share_unscaled = proportional

    def _stages(self, train: float, evaluate: float) -> tuple[float, float]:
        s = self.scale
        pretrain = s.pretrain_epochs * (s.pretrain_ecgs * train + s.eval_ecgs * evaluate)
        finetune = s.finetune_epochs * (s.finetune_ecgs * train + s.eval_ecgs * evaluate)
        return pretrain, finetune

    def per_ecg(self, config: Mapping[str, Any]) -> tuple[float, float]:
        f = resnet_flops(config)
        (a, b, _), (c, d, _) = self.train_fit, self.eval_fit
        return max(a + b * f, 1e-6), max(c + d * f, 1e-6)

    def costs(self, config: Mapping[str, Any], parameters: int | None = None) -> StageCosts:
        pretrain, finetune = self._stages(*self.per_ecg(config))
        load = self.load_fit[0] + self.load_fit[1] * 4 * (parameters or 0)
        return StageCosts(
            self.pretrain_scale * pretrain / self.recorded[0], finetune / self.recorded[1], load
        )

    def summary(self) -> dict[str, Any]:
        return {
            "scale": self.scale.__dict__,
            "shipped_pretrain_share": self.shipped_share,
            "pretrain_scale": self.pretrain_scale,
            "table_share_unscaled": getattr(self, "table_share_unscaled", None),
            "train_s_per_ecg": {
                "intercept": self.train_fit[0],
                "per_flop": self.train_fit[1],
                "r2": self.train_fit[2],
            },
            "eval_s_per_ecg": {
                "intercept": self.eval_fit[0],
                "per_flop": self.eval_fit[1],
                "r2": self.eval_fit[2],
            },
            "load_s": {"intercept": self.load_fit[0], "per_byte": self.load_fit[1]},
            "timed_on": self.machine,
        }


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares y = a + b x, and its R^2."""
    b, a = np.polyfit(x, y, 1)
    r2 = 1 - float(np.sum((y - (a + b * x)) ** 2) / np.sum((y - y.mean()) ** 2))
    return float(a), float(b), r2

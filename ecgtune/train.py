"""The one training and evaluation loop: trials, final training and tests all use it.

Read top to bottom: device → target standardisation → masked loss → batches
→ the Trainer (one epoch, evaluate, checkpoint state) → transfer helpers. A stage's settings
(`TrainConfig`, also importable from here) are declared in `ecgtune.train_config`, which needs no torch.

Nothing here knows about Ray: callers drive it an epoch at a time (`Trainer.train_epoch`, then
`Trainer.evaluate`) and report what they like — ecgtune.stages does, for sweep trials and final training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgtune.data.store import SplitArrays
from ecgtune.targets import MICROVOLTS_PER_MILLIVOLT, TARGETS, check_targets
from ecgtune.train_config import TrainConfig  # the loop's settings; callers import it from here too


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Standardizer:
    """Per-target mean and SD, always computed on a training split only."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, targets: np.ndarray, names: Sequence[str]) -> Standardizer:
        names = tuple(names)
        if targets.ndim != 2 or targets.shape[1] != len(names):
            raise ValueError(f"targets of shape {targets.shape} do not match names {names}")
        mean, std = [], []
        for j, name in enumerate(names):
            col = targets[:, j][~np.isnan(targets[:, j])]
            if len(col) < 2:
                raise ValueError(f"target {name!r} has {len(col)} labelled training samples; need at least 2")
            mean.append(float(col.mean()))
            std.append(float(max(col.std(), 1e-6)))
        return cls(names, tuple(mean), tuple(std))

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.tensor(self.mean, dtype=torch.float32, device=device),
            torch.tensor(self.std, dtype=torch.float32, device=device),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Standardizer:
        return cls(tuple(d["names"]), tuple(d["mean"]), tuple(d["std"]))


def masked_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "l1", delta: float = 1.0
) -> torch.Tensor:
    """Mean loss over labelled entries only: a NaN label silences that target for that ECG,
    while the ECG's other targets still train (PTB-XL+ tables have gaps)."""
    mask = ~torch.isnan(target)
    target = torch.where(mask, target, pred.detach())
    if kind == "l1":
        per_entry = (pred - target).abs()
    else:
        per_entry = F.huber_loss(pred, target, reduction="none", delta=delta)
    return (per_entry * mask).sum() / mask.sum().clamp(min=1)


def objective(mae: Mapping[str, float]) -> float:
    """One number to compare models across targets: mean of MAE / clinical tolerance."""
    return float(np.mean([mae[t] / TARGETS[t].tolerance for t in mae]))


# ---------------------------------------------------------------------------- batches


class Batches:
    """Feeds one split to a model without per-sample Python work.

    Signals stay int16 µV until the device: a batch is a gather of rows from
    the memory map (or from a device-resident copy), converted in bulk to
    float32 mV where the model runs.

    On the CPU one pair of buffers serves a whole epoch, so a batch's signal
    tensor is overwritten by the next batch: use it before drawing the next
    (the training and evaluation loops do) or `.clone()` it. Fresh arrays of
    tens of MB would come from mmap and be page-faulted in on every batch: at
    batch 256 that made delivery 4x slower per ECG than at batch 32.
    """

    def __init__(self, split: SplitArrays, device: torch.device, resident: bool | None = None):
        self.n = len(split)
        self.device = device
        self.targets = torch.from_numpy(np.ascontiguousarray(split.targets))
        self.signals_host = split.signals
        if resident is None:
            resident = device.type == "cuda" and _fits_on_device(split.signals.nbytes, device)
        self.resident = resident
        if resident:
            # One copy of the split on the device: a GPU then never waits on the host.
            self.signals_dev = _to_device_in_chunks(split.signals, device)
            self.targets = self.targets.to(device)

    def _gather_host(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.sort(idx)  # sorted rows read the memory map sequentially
        x = torch.from_numpy(np.ascontiguousarray(self.signals_host[idx]))
        y = self.targets[torch.from_numpy(idx)]
        if self.device.type == "cuda":
            x, y = x.pin_memory().to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        else:
            x, y = x.to(self.device), y.to(self.device)
        # (B, 8, 5000) int16 µV -> float32 mV
        return x.float().mul_(1.0 / MICROVOLTS_PER_MILLIVOLT), y

    def epoch(
        self, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of one pass. The order depends only on (seed, epoch), so a resumed run repeats it."""
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        if limit is not None:
            order = order[:limit]
        if self.resident:
            # The epoch's order goes to the device once: uploading each batch's indices would make the
            # host wait for the GPU at every step (a pageable copy synchronises the stream).
            order_dev = torch.from_numpy(order).to(self.device)
            for start in range(0, len(order), batch_size):
                i = order_dev[start : start + batch_size]
                yield self.signals_dev[i].float().mul_(1.0 / MICROVOLTS_PER_MILLIVOLT), self.targets[i]
            return
        if self.device.type != "cpu":
            # Fresh host arrays here: a reused buffer could be overwritten while a non-blocking copy reads it.
            for start in range(0, len(order), batch_size):
                yield self._gather_host(order[start : start + batch_size])
            return
        rows = min(batch_size, len(order))
        int16_buf = np.empty((rows, *self.signals_host.shape[1:]), np.int16)
        float_buf = torch.empty(int16_buf.shape, dtype=torch.float32)
        for start in range(0, len(order), batch_size):
            idx = np.sort(order[start : start + batch_size])  # sorted rows read the memory map sequentially
            n = len(idx)
            # mode="clip": "raise" would gather into a temporary first (numpy buffers `out` in that mode)
            np.take(self.signals_host, idx, axis=0, out=int16_buf[:n], mode="clip")
            x = float_buf[:n].copy_(torch.from_numpy(int16_buf[:n])).mul_(1.0 / MICROVOLTS_PER_MILLIVOLT)
            yield x, self.targets[torch.from_numpy(idx)]

    def steps(self, batch_size: int, limit: int | None = None) -> int:
        n = self.n if limit is None else min(limit, self.n)
        return math.ceil(n / batch_size)


def _to_device_in_chunks(signals: np.ndarray, device: torch.device, rows: int = 1024) -> torch.Tensor:
    """A device copy of a read-only memory map. torch cannot wrap a read-only array (it warns), and a
    writable copy of the whole split would hold it twice on the host: copy ~80 MB at a time."""
    out = torch.empty(signals.shape, dtype=torch.int16, device=device)
    for start in range(0, len(signals), rows):
        out[start : start + rows].copy_(torch.from_numpy(np.array(signals[start : start + rows])))
    return out


def _fits_on_device(nbytes: int, device: torch.device, share: float = 0.25) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < share * free  # leave room for activations and for trials packed beside this one


# ---------------------------------------------------------------------------- the trainer


@dataclass
class Evaluation:
    """Errors in physical units (bpm, ms): MAE, bias (mean of prediction − label), SD of error, N."""

    mae: dict[str, float]
    bias: dict[str, float]
    sd: dict[str, float]
    n: dict[str, int]
    objective: float
    predictions: np.ndarray | None = field(default=None, repr=False)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        out: dict[str, float] = {f"{prefix}objective": self.objective}
        for t in self.mae:
            out[f"{prefix}mae_{t}"] = self.mae[t]
            out[f"{prefix}bias_{t}"] = self.bias[t]
            out[f"{prefix}sd_{t}"] = self.sd[t]
        return out


def errors_in_units(pred: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> Evaluation:
    mae, bias, sd, n = {}, {}, {}, {}
    for j, t in enumerate(names):
        ok = ~np.isnan(truth[:, j])
        err = pred[ok, j].astype(np.float64) - truth[ok, j]
        n[t] = int(ok.sum())
        mae[t] = float(np.abs(err).mean()) if n[t] else float("nan")
        bias[t] = float(err.mean()) if n[t] else float("nan")
        sd[t] = float(err.std(ddof=1)) if n[t] > 1 else float("nan")
    return Evaluation(mae, bias, sd, n, objective(mae), pred)


@dataclass
class EpochStats:
    loss: float
    samples: int
    seconds: float
    lr: float

    @property
    def diverged(self) -> bool:
        """The epoch's mean training loss is NaN or infinite (a learning rate far too high, typically).

        Checked once per epoch on the loss summed on the device, so it costs no host sync per step.
        One non-finite step is enough to make the sum non-finite, and it leaves the weights unusable:
        its gradients are NaN/inf, gradient clipping scales them by 0 (inf * 0 = NaN), and AdamW writes
        NaN into every parameter it touches.
        """
        return not math.isfinite(self.loss)


class Trainer:
    """Holds a model with its optimiser, schedule and target scaling for one training stage."""

    def __init__(
        self,
        model: nn.Module,
        train: SplitArrays,
        config: TrainConfig,
        *,
        device: str | torch.device = "auto",
        standardizer: Standardizer | None = None,
        resident: bool | None = None,
    ):
        self.config = config
        self.device = pick_device(device) if isinstance(device, str) else device
        self.targets = check_targets(train.target_names)
        if self.targets != tuple(train.target_names):
            raise ValueError(f"split targets {train.target_names} must be in canonical order {self.targets}")
        self.standardizer = standardizer or Standardizer.fit(train.targets, self.targets)
        self.model = model.to(self.device)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.train_batches = Batches(train, self.device, resident)
        self.amp = config.amp and self.device.type == "cuda"
        if self.device.type == "cuda":
            # Fixed input shapes: let cuDNN time its convolution algorithms once and keep the fastest.
            torch.backends.cudnn.benchmark = True
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            fused=self.device.type == "cuda",  # one kernel for all parameters instead of several per tensor
        )
        self.steps_per_epoch = self.train_batches.steps(config.batch_size, config.samples_per_epoch)
        self.scheduler = _make_schedule(self.optimizer, config, self.steps_per_epoch)
        self.epoch = 0  # epochs finished
        # Training steps and evaluation batches done: what a backbone claim's heartbeat watches
        # (`ecgtune.backbones.claims`), so a claim goes stale when its holder stops advancing.
        self.progress = 0
        self._mean, self._std = self.standardizer.tensors(self.device)

    def train_epoch(self) -> EpochStats:
        cfg = self.config
        set_backbone_trainable(self.model, self.epoch >= cfg.freeze_backbone_epochs)
        self.model.train()
        # The loss is summed on the device: a .item() per step would make the host wait for the GPU at
        # every step, and the GPU then idles while the host prepares the next one.
        t0, total, seen = time.perf_counter(), torch.zeros((), device=self.device), 0
        for x, y in self.train_batches.epoch(
            cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=self.epoch, limit=cfg.samples_per_epoch
        ):
            y = (y - self._mean) / self._std
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                pred = self.forward(x)
            loss = masked_loss(pred.float(), y, cfg.loss, cfg.huber_delta)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            total += loss.detach() * len(x)
            seen += len(x)
            self.progress += 1
        self.epoch += 1
        mean_loss = total.item() / max(seen, 1)  # waits for the epoch's last step: seconds are then true
        return EpochStats(mean_loss, seen, time.perf_counter() - t0, self.optimizer.param_groups[0]["lr"])

    @torch.inference_mode()
    def predict_batches(self, batches: Batches) -> np.ndarray:
        """Predictions in physical units for every ECG of `batches`, in split order."""
        self.model.eval()
        out = []
        for x, _ in batches.epoch(self.config.eval_batch_size, shuffle=False):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                pred = self.forward(x)
            out.append(pred.float() * self._std + self._mean)
            self.progress += 1
        # One copy to the host at the end, not one per batch (each would wait for the GPU).
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, len(self.targets)), np.float32)

    def evaluate(self, split: SplitArrays | Batches) -> Evaluation:
        batches = split if isinstance(split, Batches) else Batches(split, self.device)
        return errors_in_units(self.predict_batches(batches), batches.targets.cpu().numpy(), self.targets)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this stage after the last finished epoch."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "standardizer": self.standardizer.to_dict(),
            "config": asdict(self.config),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if Standardizer.from_dict(state["standardizer"]) != self.standardizer:
            raise ValueError("checkpoint was trained with other target statistics than this training split")
        self.model.load_state_dict(state["model"])
        # The kernel choice (fused or not) belongs to this device, not to the one that saved the state:
        # a checkpoint written on a CPU would otherwise resume on a GPU without the fused kernel.
        saved = dict(state["optimizer"])
        saved["param_groups"] = [
            {**group, "fused": own["fused"], "foreach": own["foreach"]}
            for group, own in zip(saved["param_groups"], self.optimizer.param_groups, strict=True)
        ]
        self.optimizer.load_state_dict(saved)
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["torch_rng"].cpu())  # the CPU generator's state, whatever map_location did


def _make_schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    total = max(cfg.epochs * steps_per_epoch, 1)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total + 1)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = int(cfg.warmup_fraction * total)

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)


# ---------------------------------------------------------------------------- transfer


def backbone_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    head = {id(p) for p in model.head.parameters()}
    return (p for p in model.parameters() if id(p) not in head)


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or thaw everything but the head (the study froze all but a new head)."""
    for p in backbone_parameters(model):
        p.requires_grad_(trainable)


def load_backbone(
    model: nn.Module, pretrained: Mapping[str, torch.Tensor], keep_head: bool = False
) -> list[str]:
    """Copy pretrained weights into `model`; return the names loaded.

    Every backbone tensor must be present and of the same shape — a
    transfer that silently loads half a network is worse than an error.
    The head is loaded only with `keep_head` (and only if shapes agree).
    """
    own = model.state_dict()
    head_keys = {k for k in own if k.startswith("head.")}
    missing = [k for k in own if k not in head_keys and k not in pretrained]
    unexpected = [k for k in pretrained if k not in own and not k.startswith("head.")]
    mismatched = [
        k for k in own if k in pretrained and k not in head_keys and pretrained[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"pretrained state does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatch {mismatched[:5]}"
        )
    load = {k: v for k, v in pretrained.items() if k in own and k not in head_keys}
    if keep_head:
        load.update(
            {k: pretrained[k] for k in head_keys if k in pretrained and pretrained[k].shape == own[k].shape}
        )
    model.load_state_dict(load, strict=False)
    return sorted(load)

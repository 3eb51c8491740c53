"""Sweep specs and training configs: YAML -> validated pydantic objects, with clear errors.

One schema serves both uses:
- a *sweep spec* (`sweeps/*.yaml`) has a `search` section: what to vary, how to stop;
- a *training config* (`ecgtune export` output, or hand-written) has none: one fixed run.

Everything is checked at load time — unknown keys, wrong types, empty ranges,
unknown models, impossible model knobs — and errors name the file, the key
path and what is allowed, before any cluster time is spent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ecgtune.train import TrainConfig

SPEC_VERSION = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    """A registered model (family or preset) plus fixed constructor arguments."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class StoreSpec(Strict):
    """A cached store: a path, or one of the embedded demo stores built on first use.

    `path` may use environment variables (`${ECGTUNE_DATA}/ptbxl`); a relative
    path is taken relative to ECGTUNE_DATA (default: ./data of the directory the
    command runs in), never silently to wherever a Ray worker happens to start.
    """

    path: str | None = None
    demo: Literal["deepfake", "ptbxl"] | None = None


class DataSpec(Strict):
    pretrain: StoreSpec | None = None  # None: no pretraining stage (train on PTB-XL only)
    finetune: StoreSpec


class StageSpec(Strict):
    """TrainConfig fields of one stage (epochs, lr, batch size, ...)."""

    epochs: int = Field(ge=0)
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_fraction: float = 0.05
    grad_clip: float | None = 1.0
    loss: Literal["l1", "huber"] = "l1"
    huber_delta: float = 1.0
    samples_per_epoch: int | None = None
    freeze_backbone_epochs: int = 0
    eval_batch_size: int = 256
    amp: bool = True
    compile: bool = False

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(**self.model_dump(), seed=seed)


class TransferSpec(Strict):
    keep_head: bool = False  # False: a new head for PTB-XL targets/statistics


class StagesSpec(Strict):
    pretrain: StageSpec = StageSpec(epochs=0)
    finetune: StageSpec
    transfer: TransferSpec = TransferSpec()


class Distribution(Strict):
    """One searched parameter, as an Optuna distribution.

    type int/float: low, high, optional log or step. type categorical: choices.
    `divides`: (categorical) keep only choices that divide the value of another
    searched or fixed parameter — e.g. ViT heads must divide the embedding dim.
    `same_as`: not sampled; copies another parameter (e.g. tied ResNet widths).
    """

    type: Literal["int", "float", "categorical", "same_as"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    divides: str | None = None
    same_as: str | None = None


class ASHASpec(Strict):
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2, gt=1)
    brackets: int = Field(1, ge=1)


class SearcherSpec(Strict):
    algorithm: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    n_startup_trials: int = Field(4, ge=0)


class SearchSpec(Strict):
    space: dict[str, Distribution]
    num_samples: int = Field(ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    searcher: SearcherSpec = SearcherSpec()
    asha: ASHASpec | None = ASHASpec()  # None: no early stopping


class ResourcesSpec(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


class RunSpec(Strict):
    storage_path: str = "runs"
    max_failures: int = Field(1, ge=0)
    checkpoints_kept: int = Field(2, ge=1)


class Spec(Strict):
    """A sweep spec (with `search`) or a standalone training config (without)."""

    version: int = SPEC_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model: ModelSpec
    targets: list[str] = ["hr", "pr", "qrs", "qt"]
    data: DataSpec
    stages: StagesSpec
    seed: int = 0
    search: SearchSpec | None = None
    resources: ResourcesSpec = ResourcesSpec()
    run: RunSpec = RunSpec()
    # Written by `ecgtune export`: where a config came from. Free-form, never read back into a run.
    origin: dict[str, Any] | None = None


def data_root() -> Path:
    return Path(os.environ.get("ECGTUNE_DATA", "data")).expanduser().resolve()


def resolve_store(store: StoreSpec) -> Path:
    """The directory of a store; the embedded demo stores are built on first use (once per node)."""
    if store.demo is not None:
        from ecgtune.data.demo import ensure_demo_store

        return ensure_demo_store(store.demo, data_root() / "demo")
    path = Path(os.path.expandvars(store.path)).expanduser()
    return path if path.is_absolute() else data_root() / path

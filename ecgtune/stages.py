"""Pretrain on DeepFake, then fine-tune on PTB-XL: the two-stage run behind every trial and final training.

`TwoStageRun` advances one epoch per `step()` across both stages, so a sweep
has a single clock (`training_iteration`) and a checkpoint after any epoch
resumes exactly there. Each epoch also reports `finetune_epoch` (0 while
pretraining), the clock ASHA counts by default (spec `search.asha.clock`).

The objective is always measured on the PTB-XL validation fold. During
pretraining the DeepFake-trained model predicts PTB-XL validation ECGs
zero-shot (its DeepFake target statistics map outputs to bpm/ms), one
validation pass per epoch: it shows on the dashboard whether what is learnt
holds on real ECGs. It is a poor basis for stopping trials, though: on the
demo data its rank correlation with the final fine-tuned objective was
0.04-0.08 over 40 trials (docs/benchmarks.md part 4), which is why ASHA by
default judges fine-tuning epochs only.

A run whose training loss or objective stops being finite (a learning rate far too high) is done
at once: that epoch's metrics carry `diverged: True` and a NaN objective, and nothing more is trained.

No Ray here: the trial adapter and final training drive it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ecgtune import __version__
from ecgtune.backbones import Backbone
from ecgtune.data.checks import require_labelled
from ecgtune.data.locate import require_store
from ecgtune.data.store import ECGStore
from ecgtune.experiment.results import DIVERGED, EPOCH, OBJECTIVE, REUSED_EPOCH, TOTAL_EPOCHS
from ecgtune.models import build_model
from ecgtune.spec import Spec
from ecgtune.targets import check_targets
from ecgtune.train import Batches, Trainer, load_backbone, pick_device

STATE_FILE = "state.pt"
META_FILE = "meta.json"


def require_finetune_labels(path, targets) -> ECGStore:
    """The fine-tuning store at `path`, refused (one line naming it) when its train or val split has no
    label at all for one of `targets` (`ecgtune.data.checks.require_labelled`)."""
    store = ECGStore(path)
    for split in ("train", "val"):
        require_labelled(store.split_labels(split), targets, f"store {store.path}, split {split!r}")
    return store


class TwoStageRun:
    def __init__(self, spec: Spec, device: str = "auto"):
        self.spec = spec
        self.device = pick_device(device)
        self.targets = check_targets(spec.targets)
        self.pretrain_epochs = spec.pretrain_epochs
        self.finetune_epochs = spec.stages.finetune.epochs
        self.total_epochs = spec.total_epochs
        if self.total_epochs == 0:
            raise ValueError("stages.pretrain.epochs + stages.finetune.epochs is 0: nothing to train")

        # Only the train and val splits are ever opened here: the test fold belongs to final evaluation.
        self.finetune_store = require_finetune_labels(require_store(spec.data.finetune), self.targets)
        self.ptbxl_train = self.finetune_store.split("train", self.targets)
        self.ptbxl_val = Batches(self.finetune_store.split("val", self.targets), self.device)
        self.deepfake_val: Batches | None = None
        if self.pretrain_epochs:
            self.pretrain_store = ECGStore(require_store(spec.data.pretrain))
            self.deepfake_train = self.pretrain_store.split("train", self.targets)
            self.deepfake_val = Batches(self.pretrain_store.split("val", self.targets), self.device)

        torch.manual_seed(spec.seed)
        self.model = build_model(spec.network_config())
        self.stage = "pretrain" if self.pretrain_epochs else "finetune"
        self.trainer = self._make_trainer()
        # Set by the epoch whose training loss or PTB-XL objective is not finite; that epoch's metrics say
        # so (`diverged`, objective NaN) and the run is then done. Never saved: a diverged run is not resumed.
        self.diverged = False
        # The metrics of every pretraining epoch (saved with checkpoints), and the weights after the last
        # one, set when this run switches stages itself: what a backbone entry holds (`ecgtune.reuse`).
        self.pretrain_history: list[dict[str, Any]] = []
        self.pretrained: dict[str, torch.Tensor] | None = None
        # Pretraining epochs of a reused backbone (`start_from`) still to be reported, one per step(), and
        # where that backbone came from (its key, trial, sweep, the seconds its pretraining took).
        self._replay: list[dict[str, Any]] = []
        self.reused_from: dict[str, Any] | None = None

    @property
    def epochs_done(self) -> int:
        """Epochs reported or to be reported as done: reused pretraining epochs count once replayed."""
        trained = (
            self.trainer.epoch if self.stage == "pretrain" else self.pretrain_epochs + self.trainer.epoch
        )
        return trained - len(self._replay)

    @property
    def done(self) -> bool:
        """Every epoch trained, or training diverged (nothing after a NaN/inf epoch is worth training)."""
        return self.diverged or self.epochs_done >= self.total_epochs

    def _make_trainer(self) -> Trainer:
        if self.stage == "pretrain":
            cfg = self.spec.stages.pretrain.train_config(self.spec.seed)
            return Trainer(self.model, self.deepfake_train, cfg, device=self.device)
        cfg = self.spec.stages.finetune.train_config(self.spec.seed + 1)
        return Trainer(self.model, self.ptbxl_train, cfg, device=self.device)

    def _start_finetuning(self, pretrained: dict[str, torch.Tensor]) -> None:
        """Switch stages: same backbone, a new head (unless transfer.keep_head), PTB-XL statistics.

        The random generator is seeded here, so fine-tuning depends only on the pretrained weights, the
        fine-tuning settings and the seed, and not on the generator's state after pretraining: a run that
        starts from a stored backbone (`start_from`) then fine-tunes exactly as the run that pretrained it.
        """
        torch.manual_seed(self.spec.seed + 1)
        self.model = build_model(self.spec.network_config())
        load_backbone(self.model, pretrained, keep_head=self.spec.stages.transfer.keep_head)
        self.stage = "finetune"
        self.trainer = self._make_trainer()

    def start_from(self, backbone: Backbone, reported: int = 0) -> None:
        """Fine-tune `backbone` (pretrained by another run with the same backbone key) instead of
        pretraining. The next steps report its pretraining epochs, marked `reused_epoch`, as this run would
        have: `reported` of them were reported already (a trial resumed mid-pretraining).

        The epochs' zero-shot PTB-XL read-outs are the entry's when they were measured on this run's
        fine-tuning store; otherwise this run reads the loaded backbone out once on its own validation
        fold, and every reused epoch carries that read-out (`readout: "loaded backbone"`)."""
        if self.stage != "pretrain" or not self.pretrain_epochs:
            raise RuntimeError("start_from: this run is not at its pretraining stage")
        if len(backbone.epochs) != self.pretrain_epochs:
            raise ValueError(
                f"backbone {backbone.key} has {len(backbone.epochs)} pretraining epochs, this run plans "
                f"{self.pretrain_epochs}"
            )
        own = self.model.state_dict()  # the same network as the one fine-tuning builds
        misfit = [k for k in own if k not in backbone.weights or backbone.weights[k].shape != own[k].shape]
        misfit += [k for k in backbone.weights if k not in own]
        if misfit:
            raise ValueError(f"weights do not fit this model: {', '.join(misfit[:5])}")
        replay = [dict(e) for e in backbone.epochs]
        if backbone.readout_store != self.finetune_store.key:
            self.model.load_state_dict(backbone.weights)
            readout = self.trainer.evaluate(self.ptbxl_val)
            for e in replay:
                e.update(
                    {OBJECTIVE: readout.objective, **readout.metrics("ptbxl_val_")}, readout="loaded backbone"
                )
        for e in replay:
            # What this run reports for each reused epoch: the pretraining run's metrics, this run's plan.
            e.update(
                {
                    TOTAL_EPOCHS: self.total_epochs,
                    REUSED_EPOCH: True,
                    "epoch_seconds": 0.0,
                    "train_seconds": 0.0,
                }
            )
        self.pretrain_history = [dict(e) for e in backbone.epochs]
        self._replay = replay[reported:]
        self.reused_from = {
            "key": backbone.key,
            "trial": backbone.provenance.get("trial"),
            "sweep": backbone.provenance.get("sweep"),
            "seconds": backbone.pretrain_seconds,
        }
        if self.finetune_epochs:
            self._start_finetuning(backbone.weights)
        else:  # a pretraining-only run: the stored backbone is its model, pretrained through every epoch
            self.model.load_state_dict(backbone.weights)
            self.trainer.epoch = self.pretrain_epochs

    def step(self) -> dict[str, Any]:
        """Train one epoch of the current stage and return the metrics of that epoch."""
        if self.done:
            raise RuntimeError("all epochs are done")
        if self._replay:
            return self._replay.pop(0)
        if self.stage == "pretrain" and self.trainer.epoch >= self.pretrain_epochs:
            self._switch()
        started = time.perf_counter()
        stats = self.trainer.train_epoch()
        stage, stage_epoch = self.stage, self.trainer.epoch
        metrics: dict[str, Any] = {
            OBJECTIVE: math.nan,
            DIVERGED: False,
            "stage": stage,
            "stage_epoch": stage_epoch,
            # ASHA's clock when it counts fine-tuning only (spec search.asha.clock): 0 while pretraining.
            "finetune_epoch": stage_epoch if stage == "finetune" else 0,
            EPOCH: self.epochs_done,
            TOTAL_EPOCHS: self.total_epochs,
            "train_loss": stats.loss,
            "train_seconds": stats.seconds,
            "train_ecgs_per_s": stats.samples / max(stats.seconds, 1e-9),
        }
        if stats.diverged:
            # NaN weights: no evaluation is worth its time. The objective stays NaN (Tune requires the key).
            self.diverged = True
        else:
            ptbxl = self.trainer.evaluate(self.ptbxl_val)
            metrics.update({OBJECTIVE: ptbxl.objective, **ptbxl.metrics("ptbxl_val_")})
            if not math.isfinite(ptbxl.objective):
                self.diverged = True
            elif self.deepfake_val is not None:
                metrics.update(self.trainer.evaluate(self.deepfake_val).metrics("deepfake_val_"))
        metrics[DIVERGED] = self.diverged
        # Training plus evaluation: what is not in here is overhead (bench/ray_overhead.py).
        metrics["epoch_seconds"] = time.perf_counter() - started
        if stage == "pretrain":
            self.pretrain_history.append(dict(metrics))
            if self.trainer.epoch >= self.pretrain_epochs and not self.diverged:
                if self.done:  # a pretraining-only run: its backbone is what it trained
                    self.pretrained = {
                        k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                    }
                else:
                    self._switch()
        return metrics

    def _switch(self) -> None:
        """After this run's own last pretraining epoch: keep the weights (`pretrained`), fine-tune them."""
        self.pretrained = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self._start_finetuning(self.pretrained)

    # ------------------------------------------------------------------ checkpoints

    def save(self, directory: str | Path) -> None:
        """Weights, optimiser and schedule state (state.pt) plus human-readable metadata (meta.json)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "stage": self.stage,
            "trainer": self.trainer.state_dict(),
            "pretrain_history": self.pretrain_history,
            "replay": self._replay,  # reused epochs not yet reported
            "reused_from": self.reused_from,
        }
        torch.save(state, directory / STATE_FILE)
        (directory / META_FILE).write_text(json.dumps(self.metadata(), indent=2))

    def metadata(self) -> dict[str, Any]:
        return {
            "model": self.spec.network_config(),
            "targets": list(self.targets),
            "standardizer": self.trainer.standardizer.to_dict(),
            "stage": self.stage,
            "epochs_done": self.epochs_done,
            "finetune_store_key": self.finetune_store.key,
            "ecgtune_version": __version__,
        }

    def load(self, directory: str | Path) -> None:
        """Resume after the last epoch saved in `directory`."""
        # Onto the CPU: load_state_dict moves weights and optimiser state to where the parameters are, and
        # the RNG state must stay a CPU tensor (a CUDA one makes set_rng_state fail on resume).
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
        if state["stage"] != self.stage:
            self.stage = state["stage"]
            self.trainer = self._make_trainer()
        self.trainer.load_state_dict(state["trainer"])
        self.pretrain_history = list(state.get("pretrain_history", []))  # absent in older checkpoints
        self._replay = list(state.get("replay", []))
        self.reused_from = state.get("reused_from")

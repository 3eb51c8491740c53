"""A run's pretraining through the backbone store: load the entry of its key, wait for the trial that is
pretraining it, or pretrain it here and write the entry for every later trial and sweep.

    run = TwoStageRun(spec)                       # a checkpoint, if any, is loaded first
    shared = SharedPretraining(run, BackboneStore(spec.run.backbones), holder=trial_id)
    shared.prepare()                              # reuse, wait, or claim
    while not run.done:
        metrics = shared.tag(run.step())          # backbone key and origin on every result
        shared.after_step()                       # the entry, once this run has pretrained
    shared.close()                                # a claim still held (failure) is released

A trial that finds its key in the store reports the entry's pretraining epochs (`reused_epoch`) and starts
at fine-tuning epoch 1 (`TwoStageRun.start_from`). An entry refused as corrupt, truncated or foreign is
reported in one line naming it, moved aside (`BackboneStore.quarantine`), and pretrained again.

No Ray: the trial adapter (`ecgtune.trial`) and the learning-curve build (`bench.curve_table`) drive it.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from ecgtune import __version__
from ecgtune.backbones import (
    Backbone,
    BackboneStore,
    Claim,
    ClaimTiming,
    EntryRefused,
    acquire,
    backbone_key,
    key_material,
)
from ecgtune.experiment.results import BACKBONE_FROM, BACKBONE_KEY, BACKBONE_ORIGIN, SAVED_SECONDS
from ecgtune.stages import TwoStageRun


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class SharedPretraining:
    """One run's side of the backbone store (see the module docstring).

    `store` None (or a run that does not pretrain): nothing is shared, every method does nothing.
    `holder`: who claims (a trial id). `provenance`: what the entry records of the pretraining run
    (trial, sweep). `log`: where its one-line messages go (a refused entry, a wait).
    """

    def __init__(
        self,
        run: TwoStageRun,
        store: BackboneStore | None,
        holder: str,
        provenance: dict[str, Any] | None = None,
        timing: ClaimTiming | None = None,
        log: Callable[[str], None] = _stderr,
    ):
        self.run, self.store, self.holder, self.log = run, store, holder, log
        self.timing = timing or ClaimTiming()
        self.provenance = dict(provenance or {})
        self.key: str | None = None
        self.material: dict[str, Any] | None = None
        if run.pretrain_epochs and store is not None:
            store_key = run.pretrain_store.key
            if store_key is None:
                log(f"pretraining store {run.pretrain_store.path} has no content key: no backbone is shared")
            else:
                self.material = key_material(run.spec, store_key)
                self.key = backbone_key(self.material)
        self.claim: Claim | None = None
        self.refused: list[str] = []  # one line per entry refused
        self.waited_s = 0.0

    @property
    def origin(self) -> str | None:
        """"reused" (loaded from the store), "pretrained" (trained here), None (no pretraining)."""
        if self.key is None:
            return None
        return "reused" if self.run.reused_from is not None else "pretrained"

    def prepare(self) -> None:
        """Before the first step (and after a checkpoint was loaded): reuse the key's entry, wait for its
        pretrainer, or claim it. A run resumed in fine-tuning has nothing to decide."""
        run = self.run
        if self.key is None or run.stage != "pretrain":
            return
        started = time.monotonic()
        for _ in range(3):  # a refused entry is moved aside, then looked up again
            try:
                got = acquire(
                    self.store,
                    self.key,
                    self.material,
                    self.holder,
                    self.timing,
                    progress=lambda: run.trainer.progress,
                    on_wait=self._waiting,
                )
            except EntryRefused as refusal:
                self.log(f"{refusal}; pretraining it again")
                self.refused.append(str(refusal))
                self.store.quarantine(self.key)
                continue
            break
        else:
            raise RuntimeError(f"{self.store.describe(self.key)}: refused three times in a row")
        self.waited_s = time.monotonic() - started
        if isinstance(got, Backbone):
            try:
                # A trial resumed mid-pretraining reported its first epochs already.
                run.start_from(got, reported=run.trainer.epoch)
            except ValueError as exc:  # weights that do not fit this model (load_backbone's check)
                refusal = f"{self.store.describe(self.key)}: does not fit this model ({exc}); not loaded"
                self.log(f"{refusal}; pretraining it again")
                self.refused.append(refusal)
                self.store.quarantine(self.key)
                self.prepare()
        else:
            self.claim = got

    def _waiting(self, holder: str) -> None:
        self.log(f"waiting for {holder}, which is pretraining {self.store.describe(self.key)}")

    def tag(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The result with where its backbone came from (ecgtune.experiment.results' keys)."""
        if self.key is None:
            return metrics
        metrics[BACKBONE_KEY] = self.key
        metrics[BACKBONE_ORIGIN] = self.origin
        source = self.run.reused_from
        if source is not None:
            metrics[BACKBONE_FROM] = f"trial {source.get('trial')} (sweep {source.get('sweep')})"
            metrics[SAVED_SECONDS] = source.get("seconds", 0.0)
        return metrics

    def after_step(self) -> None:
        """Write the entry once this run has pretrained (and not diverged), then release the claim."""
        run = self.run
        if self.claim is None or run.pretrained is None:
            if self.claim is not None and run.diverged:
                self.close()  # a diverged backbone is nobody's to reuse
            return
        backbone = Backbone(
            key=self.key,
            material=self.material,
            weights=run.pretrained,
            epochs=run.pretrain_history,
            readout_store=run.finetune_store.key,
            provenance={
                **self.provenance,
                "host": socket.gethostname(),
                "device": str(run.device),
                "torch": torch.__version__,
                "ecgtune": __version__,
                "pretrain_seconds": sum(e.get("epoch_seconds") or 0.0 for e in run.pretrain_history),
            },
        )
        try:
            self.store.put(backbone)
        except OSError as exc:  # the run goes on; later trials pretrain this key again
            self.log(f"could not write {self.store.describe(self.key)}: {exc}")
        run.pretrained = None  # held only to be written
        self.close()

    def close(self) -> None:
        if self.claim is not None:
            self.claim.release()
            self.claim = None

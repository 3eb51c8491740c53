"""A searcher that makes trials share pretrained backbones: TPE at two levels.

Sharing pays only when suggestions repeat backbones, and a continuous space never repeats one by chance.
So, with a spec's `search.backbones` (`ecgtune.spec.BackboneSharingSpec`), each suggestion first decides
between a new backbone and one already pretrained:
- a new backbone: Optuna samples every key, as without sharing; the trial pretrains and writes the entry;
- a pretrained backbone: its model.* and pretrain.* values are fixed (Optuna's `enqueue_trial` with those
  parameters only), and the sampler draws the fine-tuning keys given them; the trial loads the entry and
  starts at fine-tuning epoch 1 (`ecgtune.reuse`).

A backbone is offered again only after a trial reported its last pretraining epoch (the entry is written
before that report: `ecgtune.trial`), so the searcher holds back instead of making trials wait; and only
while fewer than `trials_per_backbone` trials have used it. Which one: `pick` "oldest" fills every
backbone in turn; "best" takes the backbone whose trials scored best at ASHA's first rung, if it ranks in
the best `top_fraction` of backbones scored so far, and otherwise draws a new backbone.

Everything else (what TPE and ASHA are told) is `PruneAwareOptunaSearch`'s.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
from typing import Any

from ray.tune.search import Searcher

from ecgtune.experiment import EPOCH, finite_objective, is_diverged
from ecgtune.searchers import PruneAwareOptunaSearch
from ecgtune.spec import BackboneSharingSpec

BACKBONE_PREFIXES = ("model.", "pretrain.")


def is_backbone_param(name: str) -> bool:
    """A search-space key (or Optuna's name for it, `model.num_heads|model.embed_dim=128`) that the
    backbone key covers."""
    return name.startswith(BACKBONE_PREFIXES)


class BackboneSharingSearch(PruneAwareOptunaSearch):
    """`PruneAwareOptunaSearch` that reuses pretrained backbones (see the module docstring).

    `sharing`: None shares nothing (the searcher then only records backbones). `pretrain_epochs`:
    epochs a trial pretrains (its backbone is stored after the last). `first_rung`: the clock value at
    which trials are scored (ASHA's grace period). `groups` holds, per backbone (its parameters as JSON),
    the trials that used it, whether it is pretrained, failed, and its score.

    A suggestion's pick does not look at every backbone (a sweep of 10,000 trials draws thousands): the
    open ones (pretrained, not failed, not full) wait in two heaps, by age and by score, from which
    closed or rescored entries are dropped when they come to the top; the scores of all backbones not
    failed are kept sorted, for the rank the "best" pick asks.
    """

    def __init__(
        self,
        *args: Any,
        sharing: BackboneSharingSpec | None = None,
        pretrain_epochs: int = 0,
        first_rung: int = 1,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.sharing = sharing
        self.pretrain_epochs = pretrain_epochs
        self.first_rung = first_rung
        self.groups: dict[str, dict[str, Any]] = {}
        self.trial_group: dict[str, str] = {}
        self.reuses = 0  # suggestions that reused a pretrained backbone
        self._open_by_order: list[tuple[int, str]] = []  # heaps (see the class docstring)
        self._open_by_score: list[tuple[float, int, str]] = []
        self._scores: list[float] = []  # sorted: the scores of backbones not failed

    # ---------------------------------------------------------------------------------- suggesting

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        group = self._pick()
        if group is not None and trial_id not in self._ot_trials:
            self._ot_study.enqueue_trial(group["params"], skip_if_exists=False)
        config = super().suggest(trial_id)
        if config is None or config == Searcher.FINISHED or trial_id not in self._ot_trials:
            return config
        entry = self._group(self._ot_trials[trial_id].params)
        if entry["trials"] or entry["earlier"]:
            self.reuses += 1
        entry["trials"].append(trial_id)
        self.trial_group[trial_id] = entry["id"]
        return config

    def _group(self, params: dict[str, Any]) -> dict[str, Any]:
        """The backbone of a trial's Optuna parameters (its model.* and pretrain.* ones)."""
        backbone = {k: v for k, v in params.items() if is_backbone_param(k)}
        gid = json.dumps(backbone, sort_keys=True, default=str)
        if gid not in self.groups:
            self.groups[gid] = {"id": gid, "params": backbone, "trials": [], "earlier": 0, "ready": False,
                                "failed": False, "score": None, "order": len(self.groups)}  # fmt: skip
        return self.groups[gid]

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._index_groups()  # a checkpoint written before the heaps existed holds only `groups`

    def _index_groups(self) -> None:
        """The heaps and the sorted scores, from `groups` alone."""
        live = [g for g in self.groups.values() if self._is_open(g)]
        scored = [g for g in self.groups.values() if g["score"] is not None]
        self._open_by_order = sorted((g["order"], g["id"]) for g in live)  # a sorted list is a heap
        self._open_by_score = sorted((g["score"], g["order"], g["id"]) for g in scored if self._is_open(g))
        self._scores = sorted(g["score"] for g in scored if not g["failed"])

    def _is_open(self, group: dict[str, Any]) -> bool:
        share = self.sharing
        return (share is not None and group["ready"] and not group["failed"]
                and len(group["trials"]) < share.trials_per_backbone)  # fmt: skip

    def _set_ready(self, group: dict[str, Any]) -> None:
        if group["ready"]:
            return
        group["ready"] = True  # before any score: a backbone is scored in fine-tuning, after pretraining
        if self._is_open(group):  # once closed (full or failed), a backbone stays closed
            heapq.heappush(self._open_by_order, (group["order"], group["id"]))

    def _set_score(self, group: dict[str, Any], value: float) -> None:
        """A backbone's score is the best of its trials' first-rung values."""
        old = group["score"]
        if not math.isfinite(value) or (old is not None and value >= old):
            return
        group["score"] = value
        if group["failed"]:
            return
        if old is not None:
            del self._scores[bisect.bisect_left(self._scores, old)]
        bisect.insort(self._scores, value)
        if self._is_open(group):
            heapq.heappush(self._open_by_score, (value, group["order"], group["id"]))

    def _set_failed(self, group: dict[str, Any]) -> None:
        if group["failed"]:
            return
        group["failed"] = True
        if group["score"] is not None:
            del self._scores[bisect.bisect_left(self._scores, group["score"])]

    def add_earlier_trials(self, trials: list, run: str) -> None:
        """Warm start (`ecgtune.warm_start`): an earlier sweep's backbones are pretrained already, in the
        store this sweep shares with it, and scored by that sweep's trials at the first rung; they are
        offered for reuse at once, each to up to trials_per_backbone trials of this sweep."""
        super().add_earlier_trials(trials, run)
        for t in trials:
            group = self._group(t.params)
            group["earlier"] += 1
            self._set_ready(group)
            value = t.intermediate_values.get(self.first_rung)
            if value is not None:
                self._set_score(group, value)

    def _pick(self) -> dict[str, Any] | None:
        """The pretrained backbone the next trial reuses, or None for a new one."""
        share = self.sharing
        if share is None:
            return None
        if share.pick == "oldest":
            heap = self._open_by_order
            while heap and not self._is_open(self.groups[heap[0][1]]):
                heapq.heappop(heap)
            return self.groups[heap[0][1]] if heap else None
        heap = self._open_by_score
        while heap and not self._is_open(self.groups[heap[0][2]]):
            heapq.heappop(heap)  # closed since (a rescored backbone's older entries lie below its newest)
        if not heap:
            return None
        best = self.groups[heap[0][2]]  # the open backbone that scored best (the oldest among equals)
        better = bisect.bisect_left(self._scores, best["score"])  # backbones not failed that scored better
        return best if better < max(1.0, share.top_fraction * len(self._scores)) else None

    # ------------------------------------------------------------------------------------ learning

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._learn(trial_id, result)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result:
            self._learn(trial_id, result)
        super().on_trial_complete(trial_id, result=result, error=error)

    def _learn(self, trial_id: str, result: dict) -> None:
        """A backbone is pretrained once a trial reported its last pretraining epoch (finite); failed if
        its pretraining diverged; scored by its trials' best objective at the first rung."""
        group = self.groups.get(self.trial_group.get(trial_id, ""))
        if group is None:
            return
        epoch = result.get(EPOCH) or 0
        if is_diverged(result):
            if epoch <= self.pretrain_epochs:
                self._set_failed(group)
            return
        if epoch >= self.pretrain_epochs:
            self._set_ready(group)
        value = finite_objective(result)
        if result.get(self.clock) == self.first_rung and value is not None:
            self._set_score(group, value)

    def sharing_summary(self) -> dict[str, Any]:
        """For summary.json: backbones drawn, trials that reused one, trials per backbone."""
        per = [len(g["trials"]) for g in self.groups.values()]
        return {
            "backbones": len(self.groups),
            "reusing_trials": self.reuses,
            "trials_per_backbone": {str(n): per.count(n) for n in sorted(set(per))},
        }

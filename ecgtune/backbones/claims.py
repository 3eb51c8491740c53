"""Who pretrains a key: claims in the backbone store, so that of all the trials (of one sweep or of
several sweeps sharing the store) that need one backbone, exactly one pretrains it and the others wait
for its entry.

The protocol needs no atomic create-if-absent, which object storage lacks; only that a listing shows
every file written before it (S3 has been strongly consistent since December 2020; a local disk and NFS
are):
1. A trial that finds no entry writes its claim `.claims/<key>/<holder>.claim`, waits `settle_s` (more
   than the storage's clock resolution: 1 s on S3) and lists the claims.
2. Of the claims listed, the one written first wins (ties: the smaller holder name). A claim written
   after the winner listed is later than the winner's by more than the resolution, so every claimant
   agrees on one winner.
3. The winner pretrains and, while its training advances (`progress`), rewrites `<holder>.beat` every
   `lease_s / 4`. It writes the entry, then deletes its claim. The others delete their own claim and wait,
   looking for the entry every `poll_s`.
4. A claim whose beat (or, before any beat, the claim itself) has not changed for `lease_s`, by the
   waiter's own clock (no clock is compared across machines), is stale: its holder crashed or hangs. The
   waiter deletes it and claims again from step 1. A crashed pretrainer's key is taken over within
   lease_s + poll_s + 2 settle_s of its crash (the waiter's first look, a lease of no change, a poll, a
   claim); tests/test_backbone_claims.py and bench/claim_takeover.py measure it.

No deadlock: a waiting trial holds no claim, and a holder waits for nothing, so no cycle of waiting can
form; and a claim stays live only while its holder's training advances, so a holder that hangs or
crashed is taken over, whether or not every trial slot of the sweep is waiting on it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from ecgtune.backbones.store import Backbone, BackboneStore

CLAIM, BEAT = ".claim", ".beat"


@dataclass(frozen=True)
class ClaimTiming:
    """lease_s: how long a claim may go without a beat before others take it over. poll_s: how often a
    waiter looks for the entry. settle_s: the wait between writing a claim and reading the others (None:
    0.05 s on a local disk, whose clock resolution is nanoseconds; 1.1 s elsewhere)."""

    lease_s: float = 120.0
    poll_s: float = 1.0
    settle_s: float | None = None


def holder_name(text: str) -> str:
    """A claim's file name from a trial id or any label: letters, digits, '_', '.', '-' only."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:120] or "holder"


class Claim:
    """A won claim on a key: beats while the holder's training advances, until `release()`."""

    def __init__(self, store: BackboneStore, key: str, holder: str, lease_s: float,
                 progress: Callable[[], int] | None):  # fmt: skip
        self.store, self.key, self.holder = store, key, holder
        self.path = f"{store.claims_dir(key)}/{holder}"
        self._progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(lease_s / 4,), daemon=True)
        self._thread.start()

    def _beat(self, every_s: float) -> None:
        last = self._progress() if self._progress else None
        beats = 0
        while not self._stop.wait(every_s):
            now = self._progress() if self._progress else None
            if self._progress is not None and now == last:
                continue  # a holder whose training stands still lets its claim go stale
            last = now
            beats += 1
            try:
                self.store.write_bytes(self.path + BEAT, str(beats).encode())
            except OSError:
                pass  # a missed beat is not an error; missing lease_s of them hands the key to another

    def release(self) -> None:
        """Stop beating and delete the claim (after the entry is written, or when pretraining failed)."""
        self._stop.set()
        self._thread.join(timeout=5)
        _delete(self.store, self.path + CLAIM)
        _delete(self.store, self.path + BEAT)


@dataclass
class _Seen:
    marker: Any  # the newest mtime of a holder's claim and beat
    since: float  # time.monotonic() when the marker last changed


def acquire(
    store: BackboneStore,
    key: str,
    material: dict[str, Any],
    holder: str,
    timing: ClaimTiming = ClaimTiming(),
    progress: Callable[[], int] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Backbone | Claim:
    """The entry of `key` (another trial pretrained it, maybe while we waited), or a Claim: then the
    caller pretrains, writes the entry and releases the claim.

    `store.get` may raise EntryRefused: the caller decides what happens to a refused entry.
    `on_wait(holder)` is called once per holder waited for (for the trial's log line).
    """
    holder = holder_name(holder)
    settle = timing.settle_s if timing.settle_s is not None else (0.05 if store.local else 1.1)
    seen: dict[str, _Seen] = {}
    waited_for: set[str] = set()
    while True:
        backbone = store.get(key, material)
        if backbone is not None:
            return backbone
        own = f"{store.claims_dir(key)}/{holder}{CLAIM}"
        store.fs.create_dir(store.claims_dir(key), recursive=True)
        info = {"holder": holder, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        store.write_bytes(own, json.dumps(info).encode())
        time.sleep(settle)
        claims = _claims(store, key)
        winner = min(claims, key=lambda h: (claims[h][0], h)) if claims else holder
        if winner == holder:
            if store.has(key):  # finished while we claimed: take it
                _delete(store, own)
                continue
            return Claim(store, key, holder, timing.lease_s, progress)
        _delete(store, own)
        if on_wait is not None and winner not in waited_for:
            on_wait(winner)
            waited_for.add(winner)
        _wait_for(store, key, winner, timing, seen)


def _wait_for(
    store: BackboneStore, key: str, winner: str, timing: ClaimTiming, seen: dict[str, _Seen]
) -> None:
    """Return when the entry exists, the winner's claim is gone, or it went stale (then delete it)."""
    while True:
        if store.has(key):
            return
        claims = _claims(store, key)
        if winner not in claims:
            return
        marker = claims[winner][1]
        now = time.monotonic()
        state = seen.get(winner)
        if state is None or state.marker != marker:
            seen[winner] = _Seen(marker, now)
        elif now - state.since >= timing.lease_s:
            base = f"{store.claims_dir(key)}/{winner}"
            _delete(store, base + CLAIM)
            _delete(store, base + BEAT)
            seen.pop(winner, None)
            return
        time.sleep(timing.poll_s)


def _claims(store: BackboneStore, key: str) -> dict[str, tuple[Any, Any]]:
    """holder -> (when its claim was written, the newest mtime of its claim and beat)."""
    selector = pafs.FileSelector(store.claims_dir(key), allow_not_found=True)
    claimed: dict[str, Any] = {}
    beats: dict[str, Any] = {}
    for info in store.fs.get_file_info(selector):
        name = info.base_name
        if name.endswith(CLAIM):
            claimed[name[: -len(CLAIM)]] = info.mtime
        elif name.endswith(BEAT):
            beats[name[: -len(BEAT)]] = info.mtime
    return {
        h: (t, max(t, beats[h]) if h in beats and beats[h] is not None and t is not None else t)
        for h, t in claimed.items()
    }


def _delete(store: BackboneStore, path: str) -> None:
    try:
        store.fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass  # already gone: another waiter took it over, or the holder released it

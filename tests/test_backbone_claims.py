"""Claims on a backbone key: of all trials that need one key exactly one pretrains it, the others wait for
its entry; a crashed or stalled pretrainer's claim is taken over within lease + poll + 2 settle."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from bench.claim_takeover import takeover_seconds
from ecgtune.backbones import Backbone, BackboneStore, Claim, ClaimTiming, acquire, backbone_key

MATERIAL = {"format": 1, "model": {"family": "toy"}, "seed": 0}
KEY = backbone_key(MATERIAL)
FAST = ClaimTiming(lease_s=1.5, poll_s=0.05, settle_s=0.05)


def backbone() -> Backbone:
    return Backbone(KEY, MATERIAL, {"w": torch.ones(2)}, epochs=[{"epoch": 1}], readout_store=None)


def test_of_several_trials_needing_one_key_exactly_one_pretrains(tmp_path):
    store = BackboneStore(tmp_path / "bb")
    outcomes: dict[str, str] = {}
    counter = {"steps": 0}

    def trial(name: str) -> None:
        got = acquire(store, KEY, MATERIAL, name, FAST, progress=lambda: counter["steps"])
        if isinstance(got, Claim):
            outcomes[name] = "pretrained"
            for _ in range(20):  # pretraining, for longer than the lease: the beats keep the claim live
                counter["steps"] += 1
                time.sleep(0.1)
            store.put(backbone())
            got.release()
        else:
            outcomes[name] = "reused"

    threads = [threading.Thread(target=trial, args=(f"trial-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes.values()) == ["pretrained", "reused", "reused", "reused"], outcomes
    assert not list((tmp_path / "bb" / ".claims" / KEY).iterdir()), "a claim was left behind"


def test_a_pretrainer_that_fails_hands_the_key_to_a_waiting_trial_at_once(tmp_path):
    store = BackboneStore(tmp_path / "bb")
    first = acquire(store, KEY, MATERIAL, "first", FAST, progress=lambda: 0)
    assert isinstance(first, Claim)
    won: list[float] = []

    def waiter() -> None:
        got = acquire(store, KEY, MATERIAL, "second", FAST)
        won.append(time.monotonic())
        assert isinstance(got, Claim)
        got.release()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    released = time.monotonic()
    first.release()  # its pretraining failed: ecgtune.trial releases in a finally
    t.join(timeout=10)
    assert won and won[0] - released < FAST.lease_s / 2, "the waiter waited for the lease, not the release"


def test_a_stalled_pretrainer_loses_its_claim_after_the_lease(tmp_path):
    store = BackboneStore(tmp_path / "bb")
    stalled = acquire(
        store, KEY, MATERIAL, "stalled", FAST, progress=lambda: 0
    )  # its training never advances
    assert isinstance(stalled, Claim)
    started = time.monotonic()
    got = acquire(store, KEY, MATERIAL, "waiter", FAST)
    took = time.monotonic() - started
    assert isinstance(got, Claim)
    assert FAST.lease_s <= took <= FAST.lease_s + 1.0, took
    got.release()
    stalled.release()


def test_a_crashed_pretrainers_claim_is_taken_over_within_lease_plus_poll_plus_two_settles(tmp_path):
    """A holder SIGKILLed mid-pretraining (no release: a crashed node); the measurement of
    bench/claim_takeover.py on a local disk, with a short lease."""
    took = takeover_seconds(str(tmp_path / "bb"), lease_s=FAST.lease_s, poll_s=FAST.poll_s)
    bound = FAST.lease_s + FAST.poll_s + 2 * 0.05  # the local disk's settle time
    print(
        f"claim of a SIGKILLed pretrainer taken over after {took:.2f} s "
        f"(lease {FAST.lease_s} s, bound {bound} s)"
    )
    # Not before the lease (the holder's last beat may be up to lease/4 old), never much after it.
    assert FAST.lease_s * 0.7 <= took <= bound + 0.5, took


@pytest.mark.parametrize("holders", [2, 6])
def test_no_deadlock_when_every_trial_is_waiting(tmp_path, holders):
    """Every slot waits on a claim whose holder died: one of them takes it over, the rest get its entry."""
    store = BackboneStore(tmp_path / "bb")
    dead = acquire(store, KEY, MATERIAL, "dead", FAST, progress=lambda: 0)
    dead._stop.set()  # it crashed: no beats, no release
    results: list[str] = []

    def trial(i: int) -> None:
        got = acquire(store, KEY, MATERIAL, f"slot-{i}", FAST)
        if isinstance(got, Claim):
            store.put(backbone())
            got.release()
            results.append("pretrained")
        else:
            results.append("reused")

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(holders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(results) == ["pretrained"] + ["reused"] * (holders - 1), results

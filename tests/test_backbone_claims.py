"""Claims on a backbone key: of all trials that need one key exactly one pretrains it, the others wait for
its entry; a crashed or stalled pretrainer's claim is taken over within lease + poll + 2 settle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

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


HOLDER = textwrap.dedent(
    """
    import sys, time
    from ecgtune.backbones import BackboneStore, ClaimTiming, acquire, backbone_key
    material = {"format": 1, "model": {"family": "toy"}, "seed": 0}
    timing = ClaimTiming(lease_s=float(sys.argv[2]), poll_s=0.05, settle_s=0.05)
    steps = [0]
    claim = acquire(BackboneStore(sys.argv[1]), backbone_key(material), material, "doomed", timing,
                    progress=lambda: steps[0])
    print("claimed", flush=True)
    while True:  # pretraining, beating, until killed
        steps[0] += 1
        time.sleep(0.05)
    """
)


def test_a_crashed_pretrainers_claim_is_taken_over_within_lease_plus_poll_plus_two_settles(tmp_path):
    store = BackboneStore(tmp_path / "bb")
    lease = 1.5
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "bb"), str(lease)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "claimed"
        time.sleep(2 * lease)  # alive for longer than a lease: its beats keep the claim
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)  # no finally, no release: a crashed node
        proc.wait()
        got = acquire(store, KEY, MATERIAL, "survivor", FAST)
        took = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert isinstance(got, Claim)
    bound = FAST.lease_s + FAST.poll_s + 2 * FAST.settle_s
    print(
        f"claim of a SIGKILLed pretrainer taken over after {took:.2f} s "
        f"(lease {FAST.lease_s} s, bound {bound} s)"
    )
    # Not before the lease (the holder's last beat may be up to lease/4 old), never much after it.
    assert FAST.lease_s * 0.7 <= took <= bound + 0.5, took
    got.release()


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

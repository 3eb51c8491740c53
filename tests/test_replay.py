"""The search benchmark's replay (bench/replay.py) through ecgtune's real driver, on a toy blackbox whose
curve is a plain function of the configuration: each trial reports exactly its configuration's curve and
what each epoch costs, a reused backbone costs its load instead of its pretraining, the compute budget
ends the sweep, and TPE and ASHA are told what the trials reported. The full benchmark is not a test:
`python -m bench.replay run`."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sweep_checks import check_asha, check_optuna, reported

from bench import replay
from bench.blackbox import ToyBlackbox
from bench.replay_analysis import Reference, best_at, random_equivalent, regret

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
SETTING = {"blackbox": "toy", "time_scale": 0.0, "checkpoint_at": ()}


def replay_sweep(tmp_path, name: str, budget_s: float | None, num_samples: int):
    from ecgtune.search import build_tuner
    from ecgtune.sweep_results import summarize

    setting = {**SETTING, "store": str(tmp_path / "backbones")}
    spec = replay.strategy_spec(name, seed=0, setting=setting, concurrency=2)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"num_samples": num_samples})})
    stop = replay.Budget(budget_s)
    sweep = build_tuner(
        spec, str(tmp_path / "runs"), "replay", trainable=replay.replay_trial, stop=stop, quiet=True
    )
    summary = summarize(sweep.tuner.fit(), spec, sweep.searcher, wall_seconds=0.0)
    return sweep, summary, stop, reported(tmp_path / "runs" / "replay")


def test_replay_reports_the_blackbox_through_the_driver(tmp_path, local_ray, monkeypatch):
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    sweep, summary, stop, rows = replay_sweep(tmp_path, "tpe_asha", None, num_samples=10)
    toy = ToyBlackbox()
    configs = {t["trial_id"]: t["config"] for t in summary["trials"]}
    assert len(rows) == 10
    assert any(len(r) == 12 for r in rows.values()) and any(len(r) < 12 for r in rows.values())
    for trial_id, results in rows.items():
        want = toy.curve(replay.searched_values(configs[trial_id]))
        for got, expected in zip(results, want, strict=False):
            assert got["epoch"] == expected["epoch"]
            # Exactly the blackbox's value: a replay off by 1e-3 fails here.
            assert got["objective"] == pytest.approx(expected["objective"], abs=1e-9)
            assert got["compute_seconds"] == (5.0 if got["stage"] == "pretrain" else 1.0)
    assert len(stop.events) == sum(len(r) for r in rows.values())
    check_optuna(sweep.searcher, summary, rows, "finetune_epoch")
    check_asha(sweep.scheduler, rows, "finetune_epoch")


def test_the_compute_budget_ends_the_sweep_and_reuse_costs_the_load(tmp_path, local_ray, monkeypatch):
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    _, summary, stop, rows = replay_sweep(tmp_path, "tpe_asha+share(k=3,oldest)", 200.0, num_samples=1000)
    spent = sum(r["compute_seconds"] for rs in rows.values() for r in rs)
    assert stop.spent == pytest.approx(spent)
    assert (
        200.0 <= spent <= 200.0 + 2 * (3 * 5.0 + 9 * 1.0)
    )  # the trials running at the end add an epoch or so
    reusing = [rs for rs in rows.values() if rs[0].get("reused_epoch")]
    assert reusing, "the sharing searcher made no trial reuse a backbone"
    # Pretraining epochs free; the first fine-tuning epoch pays the load (and any wait). A trial the budget
    # stopped during its pretraining epochs has fewer rows (seen once in CI): its rows are still free.
    for rs in reusing:
        assert [r["compute_seconds"] for r in rs[:3]] == [0.0] * min(3, len(rs))
    past_pretraining = [rs for rs in reusing if len(rs) > 3]
    assert past_pretraining, "no reusing trial reached fine-tuning"
    for rs in past_pretraining:
        assert rs[3]["compute_seconds"] >= 1.0 + 0.1
    trace = replay.trace(stop.events)
    assert trace["reusing_trials"] == len(reusing) and trace["spent_s"] == pytest.approx(spent)


def test_best_so_far_counts_full_fidelity_trials_against_compute():
    events = [  # trial, epoch, objective, total, compute s, reused, pretraining, clock
        ("a", 1, 2.0, 2, 5.0, False, True, 0),
        ("a", 2, 1.5, 2, 1.0, False, False, 0),  # a finishes after 6 s
        ("b", 1, 2.0, 2, 0.0, True, True, 0),
        ("b", 2, 1.0, 2, 1.1, False, False, 0),  # b reuses: finishes after 7.1 s
        ("c", 1, 2.0, 2, 5.0, False, True, 0),  # c never finishes
    ]
    t = replay.trace(events)
    assert t["best_steps"] == [(6.0, 1.5), (pytest.approx(7.1), 1.0)]
    assert t["pretrain_s"] == 10.0 and t["reusing_trials"] == 1 and t["full_trials"] == 2
    curve = best_at(t, np.array([1.0, 6.0, 7.0, 7.1, 12.0]))
    assert list(curve) == [math.inf, 1.5, 1.5, 1.0, 1.0]


def test_regret_and_random_equivalent_budget():
    grid = np.linspace(0, 8, 9)
    ref = Reference(f_star=1.0, f_median=2.0, grid_fte=grid, random_best=np.array([2.0 - 0.125 * grid] * 3))
    assert list(regret(np.array([np.inf, 2.0, 1.5, 1.0, 0.9]), ref)) == [1.0, 1.0, 0.5, 0.0, 0.0]
    # Random search's expected best reaches 1.5 at 4 FTE: a run at budget 2 that reached it is worth 2x.
    # (Steps of 1/8 keep every value exact in binary, so the mean of equal curves is that curve.)
    assert random_equivalent(1.5, ref, budget_fte=2.0) == pytest.approx(2.0)
    assert random_equivalent(1.49, ref, budget_fte=2.0) == pytest.approx(2.5)
    assert random_equivalent(0.5, ref, budget_fte=2.0) == math.inf


def test_each_strategy_is_compared_with_the_one_it_would_replace():
    from bench.replay_analysis import _compared

    names = [
        *("tpe_asha", "tpe_asha+share", "tpe_asha+share(k=2,best)", "tpe_asha+warm", "tpe_mv_asha"),
        *("tpe_mv_asha+share", "gp_asha", "random_asha", "random_asha+share", "random_hyperband"),
    ]
    assert {(a, b) for a in names for b in names if _compared(a, b)} == {
        ("tpe_asha", "tpe_asha+share"),
        ("tpe_asha", "tpe_asha+share(k=2,best)"),
        ("tpe_asha", "tpe_asha+warm"),
        ("tpe_asha", "tpe_mv_asha"),
        ("tpe_asha+share", "tpe_mv_asha+share"),
        ("tpe_mv_asha", "tpe_mv_asha+share"),
        ("tpe_asha", "gp_asha"),
        ("random_asha", "random_asha+share"),
        ("random_asha", "random_hyperband"),
    }


def test_two_blackboxes_disagree_on_a_pair_only_when_both_resolve_it_oppositely():
    from bench.heldout_rankings import pair_verdict

    assert pair_verdict(0.01, 0.02, same_direction=True) == "agree"
    assert pair_verdict(0.01, 0.02, same_direction=False) == "disagree"
    assert pair_verdict(0.01, 0.30, same_direction=False) == "resolved on one only"
    assert pair_verdict(0.30, 0.01, same_direction=False) == "resolved on one only"
    assert pair_verdict(0.30, 0.06, same_direction=False) == "unresolved"
    assert pair_verdict(0.05, 0.01, same_direction=True) == "resolved on one only"  # p < alpha, not <=


def test_the_side_difference_pairs_each_seed_across_the_two_blackboxes():
    """What a seed does on both blackboxes (an easy or a hard draw) cancels: with a large seed effect
    shared by the two sides and little else, the interval is narrow; a strategy one side puts 0.5
    further away is found 0.5 further away, outside any margin below that."""
    from bench.heldout_rankings import equivalence_verdict, side_difference

    rng = np.random.default_rng(1)

    def runs(shift_first=0.0):
        seed_effect = rng.normal(0.0, 1.0, 30)  # shared by both sides
        return seed_effect + shift_first + rng.normal(0, 0.01, 30), seed_effect + rng.normal(0, 0.01, 30)

    a, b = runs(), runs()
    same = side_difference(a, b)
    assert same["low"] < 0 < same["high"] and same["high"] - same["low"] < 0.05, same
    assert equivalence_verdict(same["low"], same["high"], margin=0.045) == "same within margin"
    moved = side_difference(runs(shift_first=0.5), b)
    assert moved["point"] == pytest.approx(0.5, abs=0.02) and 0.45 < moved["low"] < moved["high"] < 0.55
    assert equivalence_verdict(moved["low"], moved["high"], margin=0.045) == "not shown within margin"
    assert equivalence_verdict(-0.05, 0.01, margin=0.045) == "not shown within margin"  # either side counts

"""What the searcher and ASHA are told, checked through real Tune runs (local Ray on loopback, 2 CPUs,
tiny models and stores): steps on ASHA's clock, the value a trial was stopped on, mode, state counts,
and trials that diverge (an absurd learning rate) ending cleanly. The same logic on toy results without
Ray: tests/test_search_logic.py; a resumed run: tests/test_sweep.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sweep_checks import check_asha, check_counts, check_optuna, reported
from synthetic import write_trial_stores

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

# Diverges within the first epoch of whichever stage uses it (tests/test_stages.py measures that).
ABSURD_LR = 1e10


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_trial_stores(tmp_path_factory.mktemp("stores"))


@pytest.fixture(autouse=True)
def _progress_table(monkeypatch):
    # As run_sweep sets it: Tune then prints ecgtune's progress table, which sorts ended trials by their
    # objective — NaN for a diverged one.
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")


def sweep_spec(
    stores: Path, storage: Path, *, space: dict, clock: str, finetune_epochs: int, **search
) -> Any:
    from ecgtune.search import resolve_data
    from ecgtune.spec import spec_from_dict

    spec = {
        "name": "facts",
        "model": {"name": "resnet_tiny", "params": {"stem_widths": [8, 8], "block_widths": [8, 8]}},
        "targets": ["hr", "pr", "qrs", "qt"],
        "data": {"pretrain": {"path": str(stores / "deepfake")}, "finetune": {"path": str(stores / "ptbxl")}},
        "stages": {
            "pretrain": {"epochs": 1, "batch_size": 8},
            "finetune": {"epochs": finetune_epochs, "batch_size": 8},
        },
        "search": {
            "space": space,
            "max_concurrent_trials": 2,
            "asha": {"clock": clock, "grace_period": 1, "reduction_factor": 2},
            **search,
        },
        "resources": {"cpu": 1, "gpu": 0},
        "run": {"storage_path": str(storage), "max_failures": 2, "checkpoints_kept": 1},
    }
    return resolve_data(spec_from_dict(spec))


def run(spec, storage: Path):
    """The sweep as `run_sweep` runs it, keeping hold of the searcher, scheduler and gauges Tune used."""
    from ecgtune.search import build_tuner
    from ecgtune.sweep_results import summarize

    sweep = build_tuner(spec, str(storage), "facts")
    summary = summarize(sweep.tuner.fit(), spec, sweep.searcher, wall_seconds=0.0)
    return sweep, summary, reported(storage / "facts")


def test_tpe_learns_the_values_asha_judged_on_the_finetune_clock(stores, tmp_path, local_ray):
    space = {
        "model.num_blocks": {"type": "int", "low": 1, "high": 3},
        "finetune.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    }
    spec = sweep_spec(
        stores,
        tmp_path,
        space=space,
        clock="finetune",
        finetune_epochs=3,
        num_samples=8,
        searcher={"seed": 0, "n_startup_trials": 3},
    )
    sweep, summary, rows = run(spec, tmp_path)
    statuses = check_counts(summary, sweep.searcher, sweep.gauges)
    print(f"\n[finetune clock] {dict(statuses)}; epochs reached {summary['epochs_reached']}")
    assert statuses["stopped"] and statuses["finished"] and statuses["stopped"] + statuses["finished"] == 8
    check_optuna(sweep.searcher, summary, rows, "finetune_epoch")
    check_asha(sweep.scheduler, rows, "finetune_epoch")
    # The pretraining epoch (finetune_epoch 0) is reported to Tune but is no step of Optuna's.
    study = sweep.searcher._ot_study
    assert all(min(t.intermediate_values) == 1 for t in study.trials)
    assert all(rs[0]["stage"] == "pretrain" and rs[0]["finetune_epoch"] == 0 for rs in rows.values())
    # Stopped trials were stopped at a rung (finetune_epoch 1 or 2), never during pretraining.
    stopped = [t for t in summary["trials"] if t["status"] == "stopped"]
    assert all(rows[t["trial_id"]][-1]["finetune_epoch"] in (1, 2) for t in stopped)
    # Mode min everywhere: Optuna's best trial is the finished trial with the lowest objective.
    finished = [t for t in summary["trials"] if t["status"] == "finished"]
    best = min(finished, key=lambda t: t["objective"])
    assert summary["best"]["trial_id"] == best["trial_id"]
    assert study.best_trial.number == sweep.searcher._ot_trials[best["trial_id"]].number


def test_diverged_trials_end_cleanly_fail_in_optuna_and_stay_out_of_asha_rungs(stores, tmp_path, local_ray):
    from ecgtune.experiment import read_experiment
    from ecgtune.sweep_results import format_summary

    # Each stage's learning rate is sensible (3 choices) or absurd (1): trials diverge in pretraining, in
    # fine-tuning, or not at all. Clock "all": ASHA's first rung is the pretraining epoch, where some diverge.
    lr = {"type": "categorical", "choices": [1e-3, 3e-3, 1e-2, ABSURD_LR]}
    spec = sweep_spec(
        stores,
        tmp_path,
        space={"pretrain.lr": lr, "finetune.lr": lr},
        clock="all",
        finetune_epochs=2,
        num_samples=8,
        searcher={"seed": 0, "n_startup_trials": 8},
    )
    sweep, summary, rows = run(spec, tmp_path)
    statuses = check_counts(summary, sweep.searcher, sweep.gauges)
    trials = {t["trial_id"]: t for t in summary["trials"]}
    print(
        f"\n[diverging lrs] {dict(statuses)}; "
        + ", ".join(
            f"{t['config']['pretrain.lr']:g}/{t['config']['finetune.lr']:g}: {t['status']} at {t['epochs']}"
            for t in trials.values()
        )
    )
    check_optuna(sweep.searcher, summary, rows, "training_iteration")
    check_asha(sweep.scheduler, rows, "training_iteration")
    in_rungs = {tid for b in sweep.scheduler._brackets for _, recorded in b._rungs for tid in recorded}
    for tid, t in trials.items():
        pre, fine = t["config"]["pretrain.lr"], t["config"]["finetune.lr"]
        if pre == ABSURD_LR:  # diverges in its one pretraining epoch, before any rung value
            assert (t["status"], t["epochs"]) == ("diverged", 1), t
            assert tid not in in_rungs
        elif fine == ABSURD_LR:  # diverges at its first fine-tuning epoch, unless ASHA stopped it before
            assert (t["status"], t["epochs"]) in (("diverged", 2), ("stopped", 1)), t
        else:
            assert t["status"] in ("finished", "stopped"), t
        if t["status"] == "diverged":
            # Ended at once: its last result is the diverged epoch, without objective or error, never retried.
            assert rows[tid][-1]["diverged"] and t["objective"] is None and t["error"] is None
            assert [r["epoch"] for r in rows[tid]] == list(range(1, t["epochs"] + 1))
            assert not (Path(t["path"]) / "error.txt").exists()
    assert statuses["diverged"] >= 2 and statuses["finished"] + statuses["stopped"] >= 2
    assert summary["best"] is None or summary["best"]["status"] == "finished"
    assert "diverged" in format_summary(summary)
    # The report, reading only the files, gives every trial the status the driver gave it.
    report = read_experiment(tmp_path / "facts").trials.set_index("trial_id")["status"]
    assert report.to_dict() == {tid: t["status"] for tid, t in trials.items()}

"""The learning-curve replay (bench/replay.py) through ecgtune's real driver, on a toy table of the
benchmark's grid: each trial reports exactly its configuration's recorded epochs, the budget stops the
sweep, and TPE and ASHA are told what the trials reported (the facts tests/test_search_facts.py checks
on trained trials). The full benchmark is not a test: `python -m bench.replay run`."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sweep_checks import check_asha, check_optuna, reported

from bench import replay
from bench.curve_table import TABLE_FORMAT, CurveTable, config_key, grid, load_space_spec

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def write_toy_table(path: Path) -> Path:
    """Every configuration of the grid with a made-up curve: 2 flat pretraining epochs, then a
    fine-tuning curve falling towards a per-configuration level; the highest learning rate with the
    deepest network diverges at its second fine-tuning epoch."""
    spec = load_space_spec()
    lrs = sorted(spec.search.space["finetune.lr"].choices)
    rng = np.random.default_rng(0)
    rows = []
    for config in grid(spec.search.space):
        level = float(rng.uniform(0.5, 1.5))
        diverges = config["finetune.lr"] == lrs[-1] and config["model.num_blocks"] == 4
        epochs = []
        for k in range(1, 12):
            finetune_epoch = max(k - 2, 0)
            diverged = diverges and finetune_epoch == 2
            objective = 1.9 + 0.01 * k if finetune_epoch == 0 else level + 1.0 / finetune_epoch
            epochs.append(
                {
                    "epoch": k,
                    "stage": "pretrain" if finetune_epoch == 0 else "finetune",
                    "stage_epoch": k if finetune_epoch == 0 else finetune_epoch,
                    "finetune_epoch": finetune_epoch,
                    "objective": None if diverged else objective,
                    "diverged": diverged,
                    "train_loss": 1.0,
                    "epoch_seconds": 1.0,
                    **{f"ptbxl_val_mae_{t}": 10 * objective for t in ("hr", "pr", "qrs", "qt")},
                }
            )
            if diverged:
                break
        rows.append({"config": config, "key": config_key(config), "parameters": 1, "epochs": epochs})
    table = {"format": TABLE_FORMAT, "configurations": len(rows), "missing": 0, "provenance": {}}
    with gzip.open(path, "wt") as f:
        json.dump({**table, "rows": rows}, f)
    return path


def replay_sweep(tmp_path: Path, table_file: Path, stop, num_samples: int):
    from ecgtune.search import build_tuner
    from ecgtune.sweep_results import summarize

    spec = replay.strategy_spec("tpe_asha", seed=0, table=table_file, time_scale=0.0, concurrency=2)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"num_samples": num_samples})})
    name = f"replay-{num_samples}"
    sweep = build_tuner(spec, str(tmp_path / "runs"), name, trainable=replay.replay_trial, stop=stop)
    summary = summarize(sweep.tuner.fit(), spec, sweep.searcher, wall_seconds=0.0)
    return spec, sweep, summary, reported(tmp_path / "runs" / name)


def test_replay_reports_the_table_through_the_driver(tmp_path, local_ray, monkeypatch):
    from ecgtune.experiment import trial_spec

    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    table_file = write_toy_table(tmp_path / "table.json.gz")
    table = CurveTable(table_file)
    record = replay.Budget(None)  # records every epoch, stops nothing
    spec, sweep, summary, rows = replay_sweep(tmp_path, table_file, record, num_samples=12)

    # Every trial reported its configuration's recorded epochs, in order, as far as ASHA let it go.
    configs = {t["trial_id"]: t["config"] for t in summary["trials"]}
    assert len(rows) == 12
    assert any(len(r) == 11 for r in rows.values()) and any(len(r) < 11 for r in rows.values())
    for trial_id, results in rows.items():
        recorded = table.epochs(replay.searched_values(trial_spec(spec, configs[trial_id])))
        got = [(r["epoch"], r["objective"]) for r in results]
        want = [(e["epoch"], math.nan if e["objective"] is None else e["objective"]) for e in recorded]
        assert len(got) <= len(want)
        for (epoch, value), (epoch_want, value_want) in zip(got, want[: len(got)], strict=True):
            assert epoch == epoch_want
            assert value == value_want or (math.isnan(value) and math.isnan(value_want))
    # The stopper saw each epoch once, in the order the driver did.
    assert len(record.events) == sum(len(r) for r in rows.values())
    curve = replay.best_curve(record.events, len(record.events))
    assert np.all(np.diff(curve[np.isfinite(curve)]) <= 0)
    # What TPE and ASHA were told is what the replayed trials reported, on ASHA's clock.
    check_optuna(sweep.searcher, summary, rows, "finetune_epoch")
    check_asha(sweep.scheduler, rows, "finetune_epoch")


def test_the_budget_ends_the_sweep(tmp_path, local_ray, monkeypatch):
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    table_file = write_toy_table(tmp_path / "table.json.gz")
    budget = replay.Budget(40)
    _, _, _, rows = replay_sweep(tmp_path, table_file, budget, num_samples=1000)
    spent = sum(len(r) for r in rows.values())
    # Spent, then ended: the trials running at that moment add at most an epoch or so each.
    assert len(budget.events) == spent
    assert 40 <= spent <= 40 + 2 * 11


def test_best_curve_counts_only_full_length_trials_and_the_budget_fraction():
    events = [
        ("a", 1, 2.0, 3, 0.0),
        ("a", 2, 1.5, 3, 0.0),  # a is stopped here: its 1.5 is not a full-length result
        ("b", 1, 1.8, 3, 0.0),
        ("b", 2, 1.2, 3, 0.0),
        ("b", 3, 1.0, 3, 0.0),  # b finishes at trial-epoch 5
        ("c", 1, 0.5, 3, 0.0),
        ("c", 2, 0.4, 3, 0.0),
        ("c", 3, 0.3, 3, 0.0),  # c finishes at trial-epoch 8
    ]
    curve = replay.best_curve(events, 10)
    assert list(curve[:4]) == [math.inf] * 4
    assert list(curve[4:7]) == [1.0] * 3
    assert list(curve[7:]) == [0.3] * 3
    assert replay.budget_to_reach(curve, 1.0) == pytest.approx(0.5)
    assert replay.budget_to_reach(curve, 0.3) == pytest.approx(0.8)
    assert replay.budget_to_reach(curve, 0.1) == math.inf


def test_a_table_without_a_row_for_every_configuration_is_refused_before_any_replay(tmp_path):
    full = CurveTable(write_toy_table(tmp_path / "full.json.gz"))
    space = load_space_spec().search.space
    full.require_grid(space)  # every configuration has its row
    with gzip.open(tmp_path / "full.json.gz", "rt") as f:
        data = json.load(f)
    dropped = data["rows"].pop(7)["key"]
    with gzip.open(tmp_path / "short.json.gz", "wt") as f:
        json.dump(data, f)
    expected = r"short\.json\.gz: no row for 1 of the grid's \d+ configurations"
    with pytest.raises(ValueError, match=expected) as e:
        CurveTable(tmp_path / "short.json.gz").require_grid(space)
    assert dropped in str(e.value)

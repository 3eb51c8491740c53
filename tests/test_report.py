"""The sweep report: reading Tune's files (finished and running sweeps, local and URI), fidelity-aware
rankings, trials.csv, plots, and the CLI. No Ray.

Two experiments are read:

- `tests/fixtures/experiment/`: a real sweep (see tests/fixtures/README.md for how it was made and what
  was stripped). Its `summary.json` was written by `ecgtune.sweep_results.summarize` from Tune's own
  ResultGrid, so it is the expected output for the report's reading of the raw files.
- `handmade`: written by `write_handmade_experiment` below, file by file in the layout Ray Tune 2.60
  writes (one directory per trial with `params.json`, `result.json` as JSON lines, `error.txt` as
  Tune's `Trial.handle_error` appends it), with one trial of each kind, running, and no `summary.json`
  or `spec.yaml`: its spec is read from params.json, as for a sweep older than the driver's spec.yaml
  written at the start.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import write_synthetic_store

from ecgtune.cli import main
from ecgtune.experiment import ExperimentError, error_headline, read_experiment
from ecgtune.report import (
    REFERENCES,
    load_experiment,
    optuna_distribution,
    param_importances,
    report_experiment,
    training_mean_baseline,
    write_report,
)
from ecgtune.spec import Distribution, spec_from_dict
from ecgtune.targets import TARGET_NAMES, TARGETS

FIXTURE = Path(__file__).parent / "fixtures" / "experiment"
MAX_EPOCHS = 4  # 1 pretraining + 3 fine-tuning epochs, in both experiments


# ======================================================================= the hand-made experiment

# trial id -> (directory name, searched values, objective per epoch, `done` on the last line, failures)
# - "aaaa0001" finished: all 4 epochs; its final objective 1.40 is worse than "bbbb0002"'s epoch-1 value.
# - "bbbb0002" stopped by ASHA after 1 epoch (Tune marks that last result done=True) at 1.20.
# - "cccc0003" failed twice (error.txt with two blocks) after reporting 2 epochs.
# - "dddd0004" running: one full line, then a line cut off mid-write; done=False.
# - "eeee0005" just started: an empty result.json, under Tune's older long directory name.
HANDMADE = {
    "aaaa0001": (
        "trial_aaaa0001",
        {"finetune.lr": 1e-3, "model.num_blocks": 2},
        [1.6, 1.5, 1.45, 1.40],
        True,
        0,
    ),
    "bbbb0002": ("trial_bbbb0002", {"finetune.lr": 5e-3, "model.num_blocks": 1}, [1.20], True, 0),
    "cccc0003": ("trial_cccc0003", {"finetune.lr": 1e-4, "model.num_blocks": 3}, [1.7, 1.65], False, 2),
    "dddd0004": ("trial_dddd0004", {"finetune.lr": 2e-3, "model.num_blocks": 2}, [1.55], False, 0),
    "eeee0005": (
        "run_trial_eeee0005_5_finetune_lr=0.0003,model_num_blocks=1_2026-11-25_12-26-24",
        {"finetune.lr": 3e-4, "model.num_blocks": 1},
        [],
        False,
        0,
    ),
}
STATUS = {"aaaa0001": "finished", "bbbb0002": "stopped", "cccc0003": "error", "dddd0004": "running"}
STATUS["eeee0005"] = "running"
ERROR = "RuntimeError: injected failure at epoch 3"


def handmade_spec(store: Path) -> dict:
    spec = {
        "name": "handmade",
        "model": {"name": "resnet_tiny", "params": {"stem_widths": [8, 8], "block_widths": [8, 8]}},
        "targets": list(TARGET_NAMES),
        "data": {"pretrain": {"path": str(store.parent / "deepfake")}, "finetune": {"path": str(store)}},
        "stages": {"pretrain": {"epochs": 1}, "finetune": {"epochs": MAX_EPOCHS - 1}},
        "search": {
            "space": {
                "finetune.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
                "model.num_blocks": {"type": "int", "low": 1, "high": 3},
            },
            "num_samples": 5,
            "asha": {"grace_period": 1, "reduction_factor": 2},
        },
    }
    return spec_from_dict(spec).model_dump(mode="json")  # a spec that validates, as the driver passes it


def maes(objective: float, shift: float) -> dict[str, float]:
    """Per-target MAE whose objective (mean of MAE / tolerance) is `objective`: each MAE is
    (objective + d) x tolerance with offsets d summing to zero, so targets differ."""
    offsets = dict(zip(TARGET_NAMES, (-1.5 * shift, -0.5 * shift, 0.5 * shift, 1.5 * shift), strict=True))
    return {t: (objective + offsets[t]) * TARGETS[t].tolerance for t in TARGET_NAMES}


def result_line(
    tid: str, epoch: int, objective: float, done: bool, spec: dict, config: dict, total: int = MAX_EPOCHS
) -> dict:
    """One line of result.json: ecgtune.stages.TwoStageRun.step's metrics plus what Tune adds."""
    mae = maes(objective, 0.02 * epoch)
    line = {
        "objective": objective,
        "stage": "pretrain" if epoch == 1 else "finetune",
        "stage_epoch": 1 if epoch == 1 else epoch - 1,
        "epoch": epoch,
        "total_epochs": total,
        "train_loss": 0.9,
        "train_seconds": 0.1,
        "train_ecgs_per_s": 150.0,
        "ptbxl_val_objective": objective,
        **{f"ptbxl_val_mae_{t}": v for t, v in mae.items()},
        **{f"ptbxl_val_bias_{t}": 0.0 for t in mae},
        **{f"ptbxl_val_sd_{t}": 2 * v for t, v in mae.items()},
        "node_id": "a" * 56,
        "timestamp": 1795609500 + 10 * epoch + 100 * int(tid[-1]),
        "checkpoint_dir_name": f"checkpoint_{epoch - 1:06d}",
        "should_checkpoint": True,
        "done": done,
        "training_iteration": epoch,
        "trial_id": tid,
        "date": "2026-11-25_12-26-17",
        "time_this_iter_s": 2.0,
        "time_total_s": 2.0 * epoch,
        "pid": 1234,
        "hostname": "worker-1",
        "node_ip": "127.0.0.1",
        "config": {"spec": spec, **config},
    }
    return line


def failure_block(n: int) -> str:
    # What Tune's Trial.handle_error appends: a header, then str(RayTaskError).
    return (
        f"Failure # {n} (occurred at 2026-11-25_12-26-{20 + n})\n"
        "ray::ImplicitFunc.train() (pid=1234, ip=127.0.0.1, actor_id=abc, repr=run_trial)\n"
        '  File "/work/main/tests/test_fault_tolerance.py", line 401, in failing_step\n'
        '    raise RuntimeError(f"injected failure at epoch {epoch}")\n'
        f"{ERROR}\n"
    )


def write_handmade_experiment(root: Path, store: Path) -> Path:
    spec = handmade_spec(store)
    for tid, (dirname, params, objectives, done, failures) in HANDMADE.items():
        d = root / dirname
        d.mkdir(parents=True)
        config = dict(params)
        if tid == "aaaa0001":  # Optuna's own name for a `divides` parameter rides along; never a column
            config["model.num_heads|model.embed_dim=128"] = 4
        (d / "params.json").write_text(json.dumps({**config, "spec": spec}, indent=2))
        lines = [
            json.dumps(result_line(tid, e, obj, done and e == len(objectives), spec, config))
            for e, obj in enumerate(objectives, start=1)
        ]
        text = "".join(line + "\n" for line in lines)
        if tid == "dddd0004":
            text += json.dumps(result_line(tid, 2, 1.5, False, spec, config))[:150]  # cut off mid-write
        (d / "result.json").write_text(text)
        if failures:
            (d / "error.txt").write_text("".join(failure_block(n) for n in range(1, failures + 1)))
    return root


@pytest.fixture(scope="module")
def handmade(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("handmade")
    store = root / "stores" / "ptbxl"
    write_synthetic_store(store, 20, seed=3, source="ptbxl")
    return write_handmade_experiment(root / "handmade-20261125-122541", store)


@pytest.fixture(scope="module")
def handmade_report(handmade, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("handmade-report")
    write_report(load_experiment(handmade), out, top_k=3)
    return out


def section(markdown: str, heading: str) -> str:
    """The text under a `## heading` (up to the next `## `)."""
    start = markdown.index(f"## {heading}")
    end = markdown.find("\n## ", start + 3)
    return markdown[start : end if end >= 0 else None]


def test_handmade_trials_csv_has_one_row_per_trial_with_status_and_mae(handmade_report):
    csv = pd.read_csv(handmade_report / "trials.csv").set_index("trial_id")
    assert sorted(csv.index) == sorted(HANDMADE)
    assert csv["status"].to_dict() == STATUS
    assert csv["epochs"].to_dict() == {tid: len(h[2]) for tid, h in HANDMADE.items()}
    assert set(csv["max_epochs"]) == {MAX_EPOCHS}  # the just-started trial's comes from the spec
    for col in ("finetune.lr", "model.num_blocks", "model", "family", "wall_s", "node_id", "hostname"):
        assert col in csv.columns
    assert not [c for c in csv.columns if "|" in c]
    assert csv.loc["aaaa0001", "model"] == "resnet_tiny" and csv.loc["aaaa0001", "family"] == "resnet"
    for tid, (_, params, objectives, _, _) in HANDMADE.items():
        assert csv.loc[tid, "finetune.lr"] == pytest.approx(params["finetune.lr"])
        if not objectives:
            assert np.isnan(csv.loc[tid, "objective_last"])
            continue
        assert csv.loc[tid, "objective_last"] == pytest.approx(objectives[-1])
        assert csv.loc[tid, "objective_best"] == pytest.approx(min(objectives))
        last = maes(objectives[-1], 0.02 * len(objectives))
        best_epoch = objectives.index(min(objectives)) + 1
        best = maes(min(objectives), 0.02 * best_epoch)
        for t in TARGET_NAMES:
            unit = TARGETS[t].unit
            assert csv.loc[tid, f"mae_{t}_{unit}_last"] == pytest.approx(last[t])
            assert csv.loc[tid, f"mae_{t}_{unit}_best"] == pytest.approx(best[t])
    assert csv.loc["cccc0003", "failures"] == 2 and csv.loc["cccc0003", "error"] == ERROR


def test_handmade_report_lists_the_failed_trial_with_its_error(handmade_report):
    failed = section((handmade_report / "report.md").read_text(), "Failed trials")
    assert "cccc0003" in failed and ERROR in failed and "| 2 |" in failed
    assert "aaaa0001" not in failed


def test_stopped_trial_is_never_ranked_against_a_finished_one(handmade, handmade_report):
    md = (handmade_report / "report.md").read_text()
    full = section(md, "Full-fidelity ranking")
    assert "aaaa0001" in full and "bbbb0002" not in full  # 1.20 after 1 epoch is not "better" than 1.40
    per_target = section(md, "Best trial per target")
    assert "bbbb0002" not in per_target and per_target.count("aaaa0001") == len(TARGET_NAMES)
    # At the 1-epoch rung the stopped trial is compared, on epoch-1 values, and rightly leads.
    rung = section(md, "Ranking at each fidelity")
    one_epoch = rung[rung.index("### After 1 epoch") : rung.index("### After 2 epochs")]
    rows = [r for r in one_epoch.splitlines() if r.startswith("| ") and r[2].isdigit()]
    assert rows[0].startswith("| 1 | bbbb0002 |") and any("aaaa0001" in r for r in rows)
    # trials.csv ranks within each number of epochs reached.
    csv = pd.read_csv(handmade_report / "trials.csv").set_index("trial_id")
    assert csv.loc["aaaa0001", "rank"] == 1 and csv.loc["bbbb0002", "rank"] == 1
    assert bool(csv.loc["aaaa0001", "full_fidelity"]) and not bool(csv.loc["bbbb0002", "full_fidelity"])


def test_running_sweep_is_read_as_running(handmade, handmade_report):
    exp = read_experiment(handmade)
    assert not exp.ended and exp.spec is not None and exp.spec.name == "handmade"
    assert exp.params == ("finetune.lr", "model.num_blocks")
    assert exp.notes == []  # the cut-off last line of a running trial is no problem worth a note
    assert exp.history.groupby("trial_id").size().to_dict() == {
        "aaaa0001": 4,
        "bbbb0002": 1,
        "cccc0003": 2,
        "dddd0004": 1,
    }
    assert "running or interrupted" in (handmade_report / "report.md").read_text()


def test_baseline_from_the_fine_tuning_store(handmade, handmade_report):
    store = Path(read_experiment(handmade).spec.data.finetune.path)
    base = training_mean_baseline(store, TARGET_NAMES)
    labels = pd.read_csv(store / "labels.csv")
    train, val = labels[labels["split"] == "train"], labels[labels["split"] == "val"]
    for t in TARGET_NAMES:
        assert base[t] == pytest.approx(np.abs(val[t] - train[t].mean()).mean())
    assert base["objective"] == pytest.approx(np.mean([base[t] / TARGETS[t].tolerance for t in TARGET_NAMES]))
    assert load_experiment(handmade).baseline == pytest.approx(base)
    baseline_md = section((handmade_report / "report.md").read_text(), "Against the mean predictor")
    assert f"{base['hr']:.2f}" in baseline_md


def test_fixed_experiments_report_each_variant_model(tmp_path):
    """A `variants` spec (sweeps/paper.yaml's kind): the model comes from each trial's variant, and a
    variant that trains fewer epochs is finished when it has trained its own."""
    spec = handmade_spec(tmp_path / "ptbxl")
    spec["search"] = {"space": {}, "num_samples": 1, "asha": None}
    spec["variants"] = {
        "resnet": {},
        "fc_deepfake_only": {"model": {"name": "fc_tiny", "params": {}}, "stages.finetune.epochs": 0},
    }
    spec = spec_from_dict(spec).model_dump(mode="json")
    root = tmp_path / "paper-20261125-122541"
    for tid, variant, objectives in (
        ("aaaa0001", "resnet", [1.5, 1.4, 1.3, 1.2]),
        ("bbbb0002", "fc_deepfake_only", [1.9]),
    ):
        d = root / f"trial_{tid}"
        d.mkdir(parents=True)
        config = {"variant": variant}
        (d / "params.json").write_text(json.dumps({**config, "spec": spec}))
        lines = [
            json.dumps(result_line(tid, e, o, e == len(objectives), spec, config, total=len(objectives)))
            for e, o in enumerate(objectives, start=1)
        ]
        (d / "result.json").write_text("\n".join(lines) + "\n")
    # ecgtune.sweep_results.summarize measures every trial against the sweep spec's 4 epochs, so its summary
    # calls the 1-epoch variant "stopped"; the report goes by each trial's own epoch count.
    summary = {
        "trials": [
            {"trial_id": "aaaa0001", "status": "finished"},
            {"trial_id": "bbbb0002", "status": "stopped"},
        ]
    }
    (root / "summary.json").write_text(json.dumps(summary))
    exp = read_experiment(root)
    t = exp.trials.set_index("trial_id")
    assert t["variant"].to_dict() == {"aaaa0001": "resnet", "bbbb0002": "fc_deepfake_only"}
    assert t["model"].to_dict() == {"aaaa0001": "resnet_tiny", "bbbb0002": "fc_tiny"}
    assert t["status"].to_dict() == {"aaaa0001": "finished", "bbbb0002": "finished"}
    assert exp.params == () and exp.sampled == ()
    write_report(exp, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    families = section(md, "Best trial per model family")
    assert (
        "| fc | fc_tiny | bbbb0002 | 1/1 |" in families
        and "| resnet | resnet_tiny | aaaa0001 | 4/4 |" in families
    )
    assert "no search space" not in md and "searched parameter(s)" in md


def test_diverged_trial_has_its_own_status_and_is_never_ranked(tmp_path):
    """A trial whose last line says `diverged` (NaN objective, no MAE: ecgtune.stages.TwoStageRun.step)
    is "diverged" while the sweep runs and after, never ranked, and counted in the report."""
    store = tmp_path / "stores" / "ptbxl"
    write_synthetic_store(store, 20, seed=3, source="ptbxl")
    spec = handmade_spec(store)
    root = tmp_path / "diverged-20261125-122541"
    trials = {"aaaa0001": [1.6, 1.5, 1.45, 1.40], "ffff0006": [1.7, float("nan")]}
    for tid, objectives in trials.items():
        config = {"finetune.lr": 1e-3 if tid == "aaaa0001" else 1e10, "model.num_blocks": 1}
        d = root / f"trial_{tid}"
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps({**config, "spec": spec}))
        lines = [result_line(tid, e, o, False, spec, config) for e, o in enumerate(objectives, start=1)]
        if tid == "ffff0006":
            lines[-1] = {k: v for k, v in lines[-1].items() if not k.startswith("ptbxl_val_")}
            lines[-1] |= {"diverged": True, "train_loss": float("nan")}
        (d / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    exp = read_experiment(root)  # no summary.json: a running sweep
    t = exp.trials.set_index("trial_id")
    assert t["status"].to_dict() == {"aaaa0001": "finished", "ffff0006": "diverged"}
    assert np.isnan(t.loc["ffff0006", "objective_last"]) and pd.isna(t.loc["ffff0006", "rank"])
    assert t.loc["ffff0006", "objective_best"] == pytest.approx(1.7) and t.loc["ffff0006", "epochs"] == 2
    write_report(exp, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "1 finished, 0 stopped, 1 diverged, 0 error, 0 running" in md and "*diverged*:" in md
    assert "ffff0006" not in section(md, "Full-fidelity ranking")
    (root / "summary.json").write_text(
        json.dumps({"trials": [{"trial_id": tid, "status": s} for tid, s in t["status"].items()]})
    )
    assert read_experiment(root).trials["status"].tolist() == t["status"].tolist()


# =========================================================================== the real experiment


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("fixture-report")
    # Written through a file:// URI, the path a report on s3://... would take.
    return out, report_experiment(FIXTURE, outdir=out.as_uri(), top_k=3)


def test_fixture_reads_as_the_driver_summarised_it():
    exp = read_experiment(FIXTURE)
    summary = json.loads((FIXTURE / "summary.json").read_text())
    assert exp.ended and exp.spec is not None and exp.spec.name == summary["sweep"]
    assert exp.max_epochs == summary["max_epochs"] == MAX_EPOCHS
    trials = exp.trials.set_index("trial_id")
    assert sorted(trials.index) == sorted(t["trial_id"] for t in summary["trials"])
    for s in summary["trials"]:
        row = trials.loc[s["trial_id"]]
        assert (row["status"], row["epochs"]) == (s["status"], s["epochs"])
        assert row["objective_last"] == pytest.approx(s["objective"])
        assert row["objective_best"] == pytest.approx(s["best_objective"])
        assert row["node_id"] == s["node_id"] and row["wall_s"] == pytest.approx(s["time_total_s"])
        for key, value in s["config"].items():
            assert row[key] == pytest.approx(value)
        for t, mae in s["ptbxl_val_mae"].items():
            assert row[f"mae_{t}_{TARGETS[t].unit}_last"] == pytest.approx(mae)
    assert (trials["status"] == "finished").sum() == 5 and (trials["status"] == "stopped").sum() == 3


def test_fixture_status_without_the_summary_matches(tmp_path):
    """While a sweep runs there is no summary.json: statuses come from the result lines alone."""
    import shutil

    copy = tmp_path / "experiment"
    shutil.copytree(FIXTURE, copy)
    (copy / "summary.json").unlink()
    (copy / "spec.yaml").unlink()
    exp = read_experiment(copy)
    expected = read_experiment(FIXTURE)
    assert not exp.ended and exp.spec == expected.spec  # the spec comes from params.json
    pd.testing.assert_series_equal(exp.trials["status"], expected.trials["status"])


def test_uri_and_plain_path_give_the_same_tables():
    plain = read_experiment(FIXTURE)
    uri = read_experiment(FIXTURE.resolve().as_uri())
    assert uri.path.startswith("file://")
    pd.testing.assert_frame_equal(plain.trials, uri.trials)
    pd.testing.assert_frame_equal(plain.history, uri.history)
    assert plain.spec == uri.spec and plain.params == uri.params


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_fixture_report_files_and_plots(fixture_report):
    out, written = fixture_report
    names = {Path(p).name for p in written}
    assert all(p.startswith("file://") for p in written)
    expected_plots = {
        "best_objective.png",
        "top_trials_mae.png",
        "asha_rungs.png",
        "importance.png",
        "slice_finetune.lr.png",
        "slice_model.num_blocks.png",
    }
    assert names == {"report.md", "trials.csv", *expected_plots}
    for name in expected_plots:
        width, height = png_size(out / name)
        assert width > 200 and height > 200, (name, width, height)
        assert (out / name).stat().st_size > 5000
    csv = pd.read_csv(out / "trials.csv")
    assert len(csv) == 8 and csv["trial_id"].is_unique


def test_fixture_report_markdown(fixture_report):
    out, _ = fixture_report
    md = (out / "report.md").read_text()
    full = section(md, "Full-fidelity ranking")
    assert full.index("c138e16a") < full.index("6069cd44")  # objective 1.471 < 1.488
    for stopped in ("f19e03a7", "d98838ca", "087e552e"):
        assert stopped not in full
    for t in TARGET_NAMES:  # names and units come from TARGETS
        assert f"{TARGETS[t].title} ({TARGETS[t].unit})" in md
    published = section(md, "Published figures")
    for ref in REFERENCES:
        assert ref.setting in published
    assert "not comparable" in published and "11.80" in published
    importance = section(md, "Hyperparameter importance")
    assert "full fidelity (4 epochs)" in importance and "after 1 epoch" in importance


# ========================================================================================= pieces


def test_importance_is_skipped_with_a_note_when_it_means_nothing():
    exp = read_experiment(FIXTURE)
    one = dataclasses.replace(exp, sampled=("finetune.lr",))
    assert param_importances(one) == ({}, ["importance: 1 searched parameter(s); fANOVA needs at least 2"])
    flat = dataclasses.replace(exp, trials=exp.trials.assign(objective_last=1.5))
    flat = dataclasses.replace(flat, history=exp.history.assign(objective=1.5))
    result, notes = param_importances(flat)
    assert result == {} and all("same objective" in n for n in notes) and len(notes) == 2


def test_optuna_distribution_maps_every_kind():
    import optuna.distributions as od

    assert optuna_distribution(Distribution(type="int", low=1, high=9, step=2)) == od.IntDistribution(
        1, 9, step=2
    )
    assert optuna_distribution(
        Distribution(type="float", low=1e-4, high=1e-2, log=True)
    ) == od.FloatDistribution(1e-4, 1e-2, log=True)
    heads = Distribution(type="categorical", choices=[2, 4, 6], divides="model.embed_dim")
    assert optuna_distribution(heads) == od.CategoricalDistribution([2, 4, 6])
    assert optuna_distribution(Distribution(type="same_as", same_as="model.block_widths.1")) is None


def test_error_headline_takes_the_exception_line_of_the_last_failure():
    assert error_headline(failure_block(1) + failure_block(2)) == (2, ERROR)
    assert error_headline("something odd\n") == (1, "something odd")


def test_cli_report(handmade, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(handmade), "-o", str(out), "--top", "2"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "report.md") in printed and (out / "trials.csv").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no trial directories" in capsys.readouterr().err
    with pytest.raises(ExperimentError):
        read_experiment(tmp_path / "empty")


def test_export_picks_the_best_full_fidelity_trial_and_round_trips(handmade, tmp_path):
    from ecgtune.report import export_best
    from ecgtune.spec import load_spec

    out, origin = export_best(FIXTURE, tmp_path / "best.yaml")
    trials = read_experiment(FIXTURE).trials
    full = trials[(trials["status"] == "finished") & trials["full_fidelity"]]
    assert origin["trial_id"] == full.sort_values("objective_last").iloc[0]["trial_id"]
    config = load_spec(out)  # the same schema validates it, with no reference back to the sweep
    assert config.search is None and config.variants is None
    assert config.origin["trial_id"] == origin["trial_id"] and config.origin["experiment"] == str(FIXTURE)
    # The hand-made experiment's best low-fidelity value belongs to a stopped trial: never exported.
    _, origin = export_best(handmade, tmp_path / "handmade.yaml")
    handmade_trials = read_experiment(handmade).trials.set_index("trial_id")
    assert handmade_trials.loc[origin["trial_id"], "status"] == "finished"


def test_export_refuses_an_experiment_without_a_full_fidelity_trial(tmp_path):
    from ecgtune.report import export_best

    exp = tmp_path / "exp"
    shutil.copytree(FIXTURE, exp)
    for result in exp.glob("*/result.json"):
        lines = result.read_text().splitlines()
        result.write_text(lines[0] + "\n")  # every trial has reported one epoch only
    (exp / "summary.json").unlink()
    with pytest.raises(ExperimentError, match="no trial has trained every planned epoch"):
        export_best(exp, tmp_path / "best.yaml")


def test_export_writes_the_spec_the_trial_trained_from_its_json_config(tmp_path):
    from ecgtune.experiment import trial_spec
    from ecgtune.report import export_best
    from ecgtune.spec import load_spec

    exp = tmp_path / "exp"
    shutil.copytree(FIXTURE, exp)
    spec = read_experiment(exp).spec
    _, origin = export_best(exp, tmp_path / "best.yaml")
    (best_dir,) = exp.glob(f"*trial_{origin['trial_id']}_*")
    config = json.loads((best_dir / "params.json").read_text())
    trained = trial_spec(spec, config)  # what ecgtune.trial.run_trial trained
    exported = load_spec(tmp_path / "best.yaml")
    assert exported.model_copy(update={"origin": None, "name": trained.name}) == trained
    # The same values from summary.json where the trial directory lost its params.json (and Tune's
    # result lines carry no config): the searcher's JSON, never table cells.
    (best_dir / "params.json").unlink()
    lines = [json.loads(x) for x in (best_dir / "result.json").read_text().splitlines()]
    (best_dir / "result.json").write_text("".join(json.dumps({**x, "config": None}) + "\n" for x in lines))
    export_best(exp, tmp_path / "again.yaml")
    again = load_spec(tmp_path / "again.yaml")
    assert again.model_copy(update={"origin": None, "name": trained.name}) == trained

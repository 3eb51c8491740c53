"""Backbone sharing in whole sweeps on a local Ray (loopback): the sharing searcher makes trials reuse
pretrained backbones and every view says so; a second sweep warm-starts from the first and reuses its
backbones. A store on S3: tests/test_backbone_s3.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from synthetic import write_trial_stores

from ecgtune import cli

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_trial_stores(tmp_path_factory.mktemp("stores"))


def write_spec(path: Path, stores: Path, storage: Path, name: str = "sharing", **run) -> Path:
    spec = {
        "name": name,
        "model": {"name": "resnet_tiny", "params": {"stem_widths": [8, 8], "block_widths": [8, 8]}},
        "targets": ["hr", "pr", "qrs", "qt"],
        "data": {"pretrain": {"path": str(stores / "deepfake")}, "finetune": {"path": str(stores / "ptbxl")}},
        "stages": {"pretrain": {"epochs": 1, "batch_size": 8}, "finetune": {"epochs": 2, "batch_size": 8}},
        "search": {
            "space": {
                "model.num_blocks": {"type": "int", "low": 1, "high": 2},
                "finetune.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            },
            "num_samples": 6,
            "max_concurrent_trials": 2,
            "searcher": {"seed": 0, "n_startup_trials": 2},
            "asha": {"grace_period": 1, "reduction_factor": 2},
            "backbones": {"trials_per_backbone": 3, "pick": "oldest"},
        },
        "resources": {"cpu": 1, "gpu": 0},
        "run": {"storage_path": str(storage), "max_failures": 0, "checkpoints_kept": 1, **run},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def summary_of(storage: Path, name: str) -> tuple[Path, dict]:
    (found,) = storage.glob(f"{name}-*/summary.json")
    return found.parent, json.loads(found.read_text())


def test_a_sharing_sweep_reuses_backbones_and_every_view_says_so(stores, tmp_path, local_ray, capsys):
    storage = tmp_path / "runs"
    assert cli.main(["sweep", str(write_spec(tmp_path / "first.yaml", stores, storage, name="first"))]) == 0
    console = capsys.readouterr().out
    experiment, summary = summary_of(storage, "first")
    trials = {t["trial_id"]: t for t in summary["trials"]}
    pretrainers = [
        (t["backbone"]["key"], tid) for tid, t in trials.items() if t["backbone"]["origin"] == "pretrained"
    ]
    pretrained = dict(pretrainers)
    assert len(pretrained) == len(pretrainers) <= 2, (
        "a key pretrained twice (num_blocks 1 or 2: two keys at most)"
    )
    reused = [t for t in trials.values() if t["backbone"]["origin"] == "reused"]
    assert reused, "the sharing searcher made no trial reuse a backbone"
    for t in reused:  # every reuse names the trial and sweep that pretrained that very key
        assert t["backbone"]["from"] == f"trial {pretrained[t['backbone']['key']]} (sweep {experiment.name})"
        assert t["backbone"]["pretrain_epochs_trained"] == 0 and t["backbone"]["pretrain_epochs_needed"] == 1
        assert t["backbone"]["saved_seconds"] > 0
    b = summary["backbones"]
    assert (b["pretrained"], b["reused"]) == (len(pretrained), len(reused))
    assert b["pretrain_epochs_trained"] == len(pretrained) < b["pretrain_epochs_needed"] == len(trials)
    assert b["store"] == str(storage / "backbones") and b["searcher"]["reusing_trials"] == len(reused)
    # The console marks each reused epoch, and the closing summary counts them.
    assert f"reused backbone {reused[0]['backbone']['key']} from trial" in console
    assert f"{len(reused)} reused one from the store" in console
    # report.md: per trial, pretrained or reused KEY from trial X (sweep Y), and the totals.
    assert cli.main(["report", str(experiment)]) == 0
    report = (experiment / "report" / "report.md").read_text()
    assert f"reused `{reused[0]['backbone']['key']}` from trial" in report
    assert f"pretraining epochs trained: {len(pretrained)} of the {len(trials)}" in report
    assert cli.main(["backbones", "ls", str(storage / "backbones")]) == 0
    assert f"{len(pretrained)} backbones" in capsys.readouterr().out

    # A second sweep over the same space, warm-started from the first: a trial whose backbone the first
    # sweep pretrained loads it from the store.
    second = write_spec(tmp_path / "second.yaml", stores, storage, name="second")
    assert cli.main(["sweep", str(second), "--warm-start", str(experiment)]) == 0
    _, summary2 = summary_of(storage, "second")
    (record,) = summary2["warm_start"]
    assert record["run"] == str(experiment) and record["trials"] == sum(
        t["status"] in ("finished", "stopped") for t in trials.values()
    )
    from_first = [t for t in summary2["trials"] if t["backbone"]["key"] in pretrained]
    assert from_first, "the second sweep drew no backbone of the first"
    for t in from_first:
        assert t["backbone"]["origin"] == "reused", t
        assert t["backbone"]["from"] == f"trial {pretrained[t['backbone']['key']]} (sweep {experiment.name})"

"""The two-stage run: pretrain -> fine-tune on one clock, transfer, resume, and the test fold untouched."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic import write_trial_stores

from ecgtune.spec import DataSpec, ModelSpec, Spec, StageSpec, StagesSpec, StoreSpec
from ecgtune.stages import TwoStageRun


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_trial_stores(tmp_path_factory.mktemp("stores"))


def make_spec(root, pretrain_epochs=2, finetune_epochs=2, **finetune) -> Spec:
    return Spec(
        name="t",
        model=ModelSpec(name="resnet_tiny", params={"num_blocks": 1}),
        targets=["hr", "qt"],
        data=DataSpec(
            pretrain=StoreSpec(path=str(root / "deepfake")), finetune=StoreSpec(path=str(root / "ptbxl"))
        ),
        stages=StagesSpec(
            pretrain=StageSpec(epochs=pretrain_epochs, batch_size=8),
            finetune=StageSpec(epochs=finetune_epochs, batch_size=8, **finetune),
        ),
    )


def test_one_clock_across_both_stages_with_both_datasets_reported(stores):
    run = TwoStageRun(make_spec(stores), device="cpu")
    reports = []
    while not run.done:
        reports.append(run.step())
    assert [r["stage"] for r in reports] == ["pretrain", "pretrain", "finetune", "finetune"]
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    assert all(r["total_epochs"] == 4 for r in reports)
    for r in reports:
        assert math.isfinite(r["objective"])
        assert {"ptbxl_val_mae_hr", "ptbxl_val_mae_qt", "deepfake_val_mae_hr", "deepfake_val_mae_qt"} <= set(
            r
        )
        assert "ptbxl_val_mae_pr" not in r  # only the chosen targets


def test_finetuning_starts_from_the_pretrained_backbone_with_a_new_head(stores):
    run = TwoStageRun(make_spec(stores, pretrain_epochs=1), device="cpu")
    run.step()
    pretrained = {k: v.clone() for k, v in run.trainer.model.state_dict().items()}
    # run.step() switched to fine-tuning after the last pretraining epoch: same backbone, PTB-XL statistics.
    assert run.stage == "finetune"
    now = run.model.state_dict()
    backbone = [k for k in now if not k.startswith("head.")]
    assert all(torch.equal(now[k], pretrained[k]) for k in backbone)
    ptbxl_train_mean = run.ptbxl_train.targets.mean(axis=0)
    assert run.trainer.standardizer.mean == pytest.approx(tuple(ptbxl_train_mean), rel=1e-5)


@pytest.mark.parametrize("stop_after", [1, 2, 3])
def test_resume_mid_stage_or_at_the_boundary_repeats_nothing(stores, tmp_path, stop_after):
    spec = make_spec(stores)
    straight = TwoStageRun(spec, device="cpu")
    expected = [straight.step() for _ in range(4)]

    first = TwoStageRun(spec, device="cpu")
    for _ in range(stop_after):
        first.step()
    first.save(tmp_path / "ckpt")
    resumed = TwoStageRun(spec, device="cpu")
    resumed.load(tmp_path / "ckpt")
    assert resumed.epochs_done == stop_after
    rest = []
    while not resumed.done:
        rest.append(resumed.step())
    assert [r["epoch"] for r in rest] == list(range(stop_after + 1, 5))
    for got, want in zip(rest, expected[stop_after:], strict=True):
        assert got["objective"] == pytest.approx(want["objective"], rel=1e-5)


def test_finetune_only_run_skips_pretraining(stores):
    spec = make_spec(stores, pretrain_epochs=0, finetune_epochs=1)
    run = TwoStageRun(spec, device="cpu")
    r = run.step()
    assert r["stage"] == "finetune" and run.done and "deepfake_val_objective" not in r


# An absurd learning rate is a legitimate config: with AdamW's decoupled weight decay (0.01) every step
# multiplies the weights by about -lr/100, so at 1e10 they overflow within the first epoch's 3 steps
# (measured: the loss is NaN after that epoch, whichever stage it is in).
ABSURD_LR = 1e10


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_run_ends_at_the_epoch_whose_loss_is_not_finite(stores, stage):
    spec = make_spec(stores, pretrain_epochs=2, finetune_epochs=2)
    stages = spec.stages.model_copy(
        update={stage: getattr(spec.stages, stage).model_copy(update={"lr": ABSURD_LR})}
    )
    run = TwoStageRun(spec.model_copy(update={"stages": stages}), device="cpu")
    reports = []
    while not run.done:
        reports.append(run.step())
    diverged_at = 1 if stage == "pretrain" else 3
    assert [r["epoch"] for r in reports] == list(range(1, diverged_at + 1))
    *before, last = reports
    assert all(not r["diverged"] and math.isfinite(r["objective"]) for r in before)
    assert last["diverged"] and last["stage"] == stage
    assert not math.isfinite(last["train_loss"]) and math.isnan(last["objective"])
    # No evaluation of NaN weights: no MAE is reported for that epoch.
    assert not [k for k in last if k.startswith(("ptbxl_val_", "deepfake_val_"))]
    assert run.done and run.diverged and run.stage == stage  # a diverged pretraining is not fine-tuned
    with pytest.raises(RuntimeError, match="done"):
        run.step()


def test_run_ends_at_an_epoch_whose_objective_is_not_finite(stores, monkeypatch):
    run = TwoStageRun(make_spec(stores, pretrain_epochs=1, finetune_epochs=3), device="cpu")
    first = run.step()
    assert not first["diverged"]
    evaluate = run.trainer.evaluate

    def inf_objective(split):  # finite loss, but predictions that overflow (seen at lr 1e8)
        ev = evaluate(split)
        ev.objective = float("inf")
        return ev

    monkeypatch.setattr(run.trainer, "evaluate", inf_objective)
    second = run.step()
    assert second["diverged"] and second["objective"] == float("inf")
    assert math.isfinite(second["train_loss"])
    assert run.done and run.epochs_done == 2


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_target_without_any_label_in_train_or_val_is_refused_before_training(tmp_path, split):
    """All-missing QT labels in one split: a NaN validation MAE would read as a diverged trial, and
    nothing can be learned from no labels. The run (and, before Ray starts, the sweep) names the store,
    split and target instead."""
    import pandas as pd

    from ecgtune.search import resolve_data

    root = write_trial_stores(tmp_path / "stores")
    labels_file = root / "ptbxl" / "labels.csv"
    labels = pd.read_csv(labels_file)
    labels.loc[labels["split"] == split, "qt"] = float("nan")
    labels.to_csv(labels_file, index=False)
    spec = make_spec(root)
    expected = rf"store {root / 'ptbxl'}, split '{split}': none of its \d+ ECGs has a qt label"
    with pytest.raises(ValueError, match=expected):
        TwoStageRun(spec, device="cpu")
    with pytest.raises(ValueError, match=expected):
        resolve_data(spec)
    TwoStageRun(spec.model_copy(update={"targets": ["hr"]}), device="cpu")  # HR alone still trains

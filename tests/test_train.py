"""The training core: masked loss, train-only standardisation, learning, determinism, resume, transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgtune.data.store import SplitArrays
from ecgtune.models import create_model
from ecgtune.targets import TARGETS
from ecgtune.train import (
    Batches,
    Standardizer,
    TrainConfig,
    Trainer,
    errors_in_units,
    load_backbone,
    masked_loss,
    objective,
)

NAMES = ("hr", "qt")


def learnable_split(n: int, seed: int, names=NAMES) -> SplitArrays:
    """ECGs whose amplitude sets the labels: a tiny model can learn this in a few epochs."""
    rng = np.random.default_rng(seed)
    amp = rng.uniform(0.2, 1.0, n)
    t = np.arange(5000) / 500
    wave = np.sin(2 * np.pi * 1.2 * t)[None, None, :] * np.ones((1, 8, 1))
    signals_mv = amp[:, None, None] * wave + 0.01 * rng.standard_normal((n, 8, 5000))
    targets = np.stack([60 + 40 * amp, 350 + 100 * amp][: len(names)], axis=1).astype(np.float32)
    return SplitArrays(
        np.rint(signals_mv * 1000).astype(np.int16),
        targets,
        tuple(names),
        np.array([str(i) for i in range(n)]),
    )


def tiny(k: int = 2):
    torch.manual_seed(0)
    return create_model("resnet_tiny", num_outputs=k)


@pytest.mark.parametrize("resident", [False, True], ids=["host-buffers", "resident"])
@pytest.mark.parametrize("limit", [None, 7])
def test_batches_are_the_store_rows_in_mv_with_their_labels(limit, resident):
    # 23 ECGs in batches of 5: a partial last batch, and (host) buffers reused from batch to batch;
    # "resident" is the path a GPU takes (the split copied to the device, the order uploaded once).
    split = learnable_split(23, seed=3)
    split.signals[:, 0, 0] = np.arange(23)  # row number in µV, so each row is recognisable
    batches = Batches(split, torch.device("cpu"), resident=resident)
    seen = []
    for x, y in batches.epoch(5, shuffle=True, seed=1, epoch=2, limit=limit):
        rows = x[:, 0, 0].mul(1000).round().long().numpy()
        np.testing.assert_allclose(x.numpy(), split.signals[rows] / 1000.0, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(y.numpy(), split.targets[rows])
        assert x.dtype == torch.float32 and x.shape[1:] == (8, 5000)
        seen.extend(rows.tolist())
    order = np.random.default_rng([1, 2]).permutation(23)[:limit]
    assert sorted(seen) == sorted(order.tolist())
    assert len(seen) == len(set(seen))


def test_epoch_loss_is_the_sample_weighted_mean_of_the_step_losses():
    # The loss is summed on the device (no host sync per step); check it against losses taken per step.
    train, cfg = learnable_split(21, 0), TrainConfig(epochs=1, batch_size=8, lr=1e-3, grad_clip=None)
    trainer = Trainer(tiny(), train, cfg, device="cpu")
    reference = Trainer(tiny(), train, cfg, device="cpu")
    step_losses, sizes = [], []
    for x, y in reference.train_batches.epoch(8, shuffle=True, seed=cfg.seed, epoch=0):
        loss = masked_loss(reference.model(x), (y - reference._mean) / reference._std)
        reference.optimizer.zero_grad()
        loss.backward()
        reference.optimizer.step()
        reference.scheduler.step()
        step_losses.append(loss.item())
        sizes.append(len(x))
    stats = trainer.train_epoch()
    assert sizes == [8, 8, 5] and stats.samples == 21
    assert stats.loss == pytest.approx(np.average(step_losses, weights=sizes), rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("resident", [True, False], ids=["resident", "host-batches"])
def test_cuda_training_and_prediction_do_not_wait_for_the_gpu_at_every_step(resident):
    # CUDA's sync debug mode warns at each host-device synchronisation. An epoch (and a prediction
    # pass) of 2 batches and one of 12 must synchronise equally often: a fixed number of times per pass
    # (the loss read-out at least, which also shows the counting works), none per step.
    import warnings

    def syncs(steps: int) -> tuple[int, int]:
        split = learnable_split(8 * steps, 0)
        cfg = TrainConfig(batch_size=8, eval_batch_size=8)
        trainer = Trainer(tiny(), split, cfg, device="cuda", resident=resident)
        batches = Batches(split, trainer.device, resident=resident)
        trainer.train_epoch()  # warm-up: cuDNN autotuning, optimiser state, allocator growth
        trainer.predict_batches(batches)
        counts = []
        for work in (trainer.train_epoch, lambda: trainer.predict_batches(batches)):
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    work()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            counts.append(sum("synchroniz" in str(w.message).lower() for w in caught))
        return counts[0], counts[1]

    short, long = syncs(2), syncs(12)
    assert short[0] >= 1, "no synchronisation seen at all: the loss read-out must be one"
    assert short == long, f"(train, predict) syncs: {short} with 2 batches, {long} with 12"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_checkpoint_resumes_on_cuda_with_the_fused_optimiser():
    cfg = TrainConfig(epochs=3, batch_size=8, seed=5)
    train = learnable_split(24, 0)
    cpu = Trainer(tiny(), train, cfg, device="cpu")
    cpu.train_epoch()
    gpu = Trainer(tiny(), train, cfg, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    assert gpu.optimizer.param_groups[0]["fused"] is True
    assert gpu.epoch == 1 and np.isfinite(gpu.train_epoch().loss)


def test_optimiser_kernel_choice_follows_the_device_not_the_checkpoint():
    # A state saved by a fused optimiser (what CUDA uses) resumes with this trainer's own choice.
    cfg = TrainConfig(epochs=2, batch_size=8, seed=5)
    train = learnable_split(24, 0)
    saver = Trainer(tiny(), train, cfg, device="cpu")
    saver.optimizer = torch.optim.AdamW(saver.model.parameters(), lr=cfg.lr, fused=True)
    saver.scheduler = torch.optim.lr_scheduler.LambdaLR(saver.optimizer, lambda step: 1.0)
    saver.train_epoch()
    state = saver.state_dict()
    assert state["optimizer"]["param_groups"][0]["fused"] is True
    resumed = Trainer(tiny(), train, cfg, device="cpu")
    resumed.load_state_dict(state)
    assert resumed.optimizer.param_groups[0]["fused"] is False
    # The moments came along with the kernel choice changed.
    for mine, theirs in zip(resumed.model.parameters(), saver.model.parameters(), strict=True):
        torch.testing.assert_close(
            resumed.optimizer.state[mine]["exp_avg"], saver.optimizer.state[theirs]["exp_avg"]
        )


def test_masked_loss_ignores_missing_labels_in_value_and_gradient():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
    loss = masked_loss(pred, target)
    assert loss.item() == pytest.approx((1 + 2 + 3) / 3)
    loss.backward()
    assert pred.grad[0, 1].item() == 0.0
    assert pred.grad[0, 0].item() != 0.0
    assert not torch.isnan(masked_loss(pred, torch.full((2, 2), float("nan")))).item()


def test_huber_loss_is_quadratic_near_zero():
    pred = torch.tensor([[0.5]])
    assert masked_loss(pred, torch.zeros(1, 1), "huber", 1.0).item() == pytest.approx(0.125)
    assert masked_loss(pred, torch.zeros(1, 1), "l1").item() == pytest.approx(0.5)


def test_standardisation_uses_training_split_only():
    train, val = learnable_split(32, 0), learnable_split(16, 1)
    val = SplitArrays(val.signals, val.targets + 1000, val.target_names, val.record_ids)
    trainer = Trainer(tiny(), train, TrainConfig(epochs=1), device="cpu")
    assert trainer.standardizer.mean == pytest.approx(tuple(np.nanmean(train.targets, axis=0)))
    assert trainer.standardizer.mean[0] < 200  # val's +1000 shift never leaked in


def test_standardizer_skips_nan_and_refuses_unlabelled_target():
    y = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, 5.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="'qt' has 1 labelled"):
        Standardizer.fit(y, NAMES)
    s = Standardizer.fit(y[:, :1], ("hr",))
    assert s.mean == (2.0,) and s.std == (1.0,)


def test_errors_are_in_physical_units_and_objective_uses_tolerances():
    truth = np.array([[60.0, 400.0], [70.0, np.nan], [80.0, 420.0]])
    pred = np.array([[62.0, 430.0], [69.0, 0.0], [80.0, 420.0]])
    ev = errors_in_units(pred, truth, NAMES)
    assert ev.mae == {"hr": pytest.approx(1.0), "qt": pytest.approx(15.0)}
    assert ev.bias["hr"] == pytest.approx(1 / 3)
    assert ev.n == {"hr": 3, "qt": 2}
    assert ev.objective == pytest.approx((1.0 / TARGETS["hr"].tolerance + 15.0 / TARGETS["qt"].tolerance) / 2)
    assert objective({"qrs": 10.0}) == pytest.approx(1.0)


def test_tiny_model_overfits_32_ecgs():
    train = learnable_split(32, 0)
    trainer = Trainer(tiny(), train, TrainConfig(epochs=20, batch_size=8, lr=3e-3), device="cpu")
    losses = [trainer.train_epoch().loss for _ in range(20)]
    assert np.mean(losses[-3:]) < losses[0] / 4, losses
    assert trainer.evaluate(train).mae["hr"] < 4.0  # bpm; predicting the mean gives ~10


def test_seeded_runs_on_cpu_give_identical_metrics():
    def run():
        torch.manual_seed(1)
        trainer = Trainer(
            create_model("resnet_tiny", num_outputs=2),
            learnable_split(32, 0),
            TrainConfig(epochs=2, batch_size=8, seed=3),
            device="cpu",
        )
        losses = [trainer.train_epoch().loss for _ in range(2)]
        return losses, trainer.evaluate(learnable_split(16, 1)).metrics()

    assert run() == run()


def test_resume_from_state_repeats_no_epoch_and_matches_uninterrupted_run():
    cfg = TrainConfig(epochs=3, batch_size=8, seed=5)
    train = learnable_split(24, 0)
    straight = Trainer(tiny(), train, cfg, device="cpu")
    for _ in range(3):
        straight.train_epoch()

    first = Trainer(tiny(), train, cfg, device="cpu")
    first.train_epoch()
    first.train_epoch()
    state = first.state_dict()
    resumed = Trainer(tiny(), train, cfg, device="cpu")
    resumed.load_state_dict(state)
    assert resumed.epoch == 2
    resumed.train_epoch()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_transfer_loads_every_backbone_weight_and_replaces_head():
    src, dst = tiny(4), create_model("resnet_tiny", num_outputs=2)
    loaded = load_backbone(dst, src.state_dict())
    backbone_keys = [k for k in dst.state_dict() if not k.startswith("head.")]
    assert loaded == sorted(backbone_keys)
    for k in backbone_keys:
        torch.testing.assert_close(dst.state_dict()[k], src.state_dict()[k])
    assert dst.head.out_features == 2
    with pytest.raises(ValueError, match="does not fit"):
        load_backbone(create_model("resnet_tiny", num_outputs=2, num_blocks=2), src.state_dict())


def test_frozen_backbone_trains_only_the_head_for_k_epochs():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(
        model,
        learnable_split(16, 0),
        TrainConfig(epochs=2, batch_size=8, freeze_backbone_epochs=1),
        device="cpu",
    )
    trainer.train_epoch()
    after = model.state_dict()
    conv_weights = [
        k for k in after if k.endswith("weight") and not k.startswith("head.") and after[k].dim() > 1
    ]
    assert conv_weights and all(torch.equal(before[k], after[k]) for k in conv_weights)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    trainer.train_epoch()
    assert not all(torch.equal(before[k], model.state_dict()[k]) for k in conv_weights)


def test_invalid_train_config_names_the_key():
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


def test_epoch_with_a_non_finite_loss_is_flagged():
    # AdamW's weight decay multiplies the weights by about -lr/100 per step: at lr 1e10 they overflow
    # within an epoch of 4 steps (measured: loss NaN; with 2 steps the loss was still finite, 1.2e21).
    # Stopping there is the stages' rule (tests/test_stages.py).
    config = TrainConfig(epochs=3, batch_size=8, lr=1e10)
    trainer = Trainer(tiny(), learnable_split(32, 0), config, device="cpu")
    stats = trainer.train_epoch()
    assert stats.diverged and np.isnan(stats.loss) and trainer.epoch == 1
    ok = Trainer(tiny(), learnable_split(32, 0), TrainConfig(epochs=1, batch_size=8), device="cpu")
    assert not ok.train_epoch().diverged

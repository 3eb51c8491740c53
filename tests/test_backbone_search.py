"""The backbone-sharing searcher on toy results, without a Ray cluster: it offers a backbone again only once
it is pretrained, never to more than trials_per_backbone trials, fixes the backbone's values and samples
only the fine-tuning ones, prefers backbones that scored well ("best"), and survives save -> restore."""

from __future__ import annotations

import optuna
import pytest

from ecgtune.backbone_search import BackboneSharingSearch
from ecgtune.spec import BackboneSharingSpec

PRETRAIN = 2  # pretraining epochs; fine-tuning epochs after them


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(trial: optuna.Trial) -> dict:  # module level: a saved searcher pickles it
    return {
        "model.width": trial.suggest_int("model.width", 8, 64, log=True),
        "pretrain.lr": trial.suggest_float("pretrain.lr", 1e-4, 1e-2, log=True),
        "finetune.lr": trial.suggest_float("finetune.lr", 1e-4, 1e-2, log=True),
    }


def searcher(**sharing) -> BackboneSharingSearch:
    return BackboneSharingSearch(
        space=space,
        metric="objective",
        mode="min",
        sampler=optuna.samplers.RandomSampler(seed=0),
        clock="finetune_epoch",
        sharing=BackboneSharingSpec(**sharing),
        pretrain_epochs=PRETRAIN,
        first_rung=1,
    )


def report(s: BackboneSharingSearch, trial: str, epoch: int, objective: float) -> None:
    ft = max(0, epoch - PRETRAIN)
    s.on_trial_result(
        trial,
        {
            "objective": objective,
            "epoch": epoch,
            "finetune_epoch": ft,
            "training_iteration": epoch,
            "total_epochs": 5,
        },
    )


def backbone(config: dict) -> tuple:
    flat = (
        config
        if "model.width" in config
        else {f"model.{k}": v for k, v in config["model"].items()}
        | {f"pretrain.{k}": v for k, v in config["pretrain"].items()}
    )
    return flat["model.width"], flat["pretrain.lr"]


def finetune_lr(config: dict) -> float:
    return config["finetune.lr"] if "finetune.lr" in config else config["finetune"]["lr"]


def test_a_backbone_is_offered_again_only_once_pretrained_and_to_at_most_k_trials():
    s = searcher(trials_per_backbone=3, pick="oldest")
    first = s.suggest("t1")
    second = s.suggest("t2")  # t1 still pretraining: a new backbone, not a wait
    assert backbone(second) != backbone(first)
    report(s, "t1", 1, 2.0)
    assert backbone(s.suggest("t3")) not in (backbone(first),)  # one pretraining epoch of two: not ready
    report(s, "t1", PRETRAIN, 1.9)  # its last pretraining epoch: the entry is written before this report
    reuses = [s.suggest(f"r{i}") for i in range(2)]
    assert [backbone(c) for c in reuses] == [backbone(first)] * 2
    assert len({finetune_lr(c) for c in [first, *reuses]}) == 3, "the fine-tuning lr is sampled anew"
    assert backbone(s.suggest("t4")) != backbone(first), "more than trials_per_backbone trials"
    assert s.sharing_summary()["reusing_trials"] == 2


def test_best_reuses_the_backbone_that_scored_best_and_skips_poor_ones():
    s = searcher(trials_per_backbone=4, pick="best", top_fraction=0.5)
    configs = {f"t{i}": s.suggest(f"t{i}") for i in range(4)}
    for i, value in enumerate([1.0, 3.0, 2.0, 4.0]):  # first-rung scores
        report(s, f"t{i}", PRETRAIN, 5.0)
        report(s, f"t{i}", PRETRAIN + 1, value)
    nxt = [s.suggest(f"n{i}") for i in range(5)]
    best = backbone(configs["t0"])
    assert [backbone(c) == best for c in nxt[:3]] == [True, True, True]  # up to 4 trials on the best
    # Then t2's backbone (2.0) ranks second of four: in the better half. t1 (3.0) and t3 never.
    assert backbone(nxt[3]) == backbone(configs["t2"])
    assert all(backbone(c) not in (backbone(configs["t1"]), backbone(configs["t3"])) for c in nxt)


def test_a_backbone_whose_pretraining_diverged_is_never_offered():
    s = searcher(trials_per_backbone=4, pick="oldest")
    first = s.suggest("t1")
    s.on_trial_complete(
        "t1",
        {"objective": float("nan"), "diverged": True, "epoch": 1, "finetune_epoch": 0, "total_epochs": 5},
    )
    assert all(backbone(s.suggest(f"t{i}")) != backbone(first) for i in range(2, 6))


def test_sharing_survives_save_and_restore(tmp_path):
    s = searcher(trials_per_backbone=3, pick="oldest")
    first = s.suggest("t1")
    report(s, "t1", PRETRAIN, 1.0)
    s.save(str(tmp_path / "searcher.pkl"))
    restored = searcher(trials_per_backbone=3, pick="oldest")
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert backbone(restored.suggest("t2")) == backbone(first)


def test_a_warm_started_sweep_reuses_the_earlier_sweeps_best_backbone_at_once():
    earlier = searcher(trials_per_backbone=3, pick="best")
    configs = [earlier.suggest(f"e{i}") for i in range(3)]
    for i, value in enumerate([2.0, 1.0, 3.0]):
        report(earlier, f"e{i}", PRETRAIN, 5.0)
        stopped = {"objective": value, "epoch": PRETRAIN + 1, "finetune_epoch": 1, "total_epochs": 5}
        earlier.on_trial_complete(f"e{i}", {**stopped, "training_iteration": PRETRAIN + 1})
    trials = earlier._ot_study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert len(trials) == 3
    warm = searcher(trials_per_backbone=2, pick="best")
    warm.add_earlier_trials(trials, "earlier-run")
    # Before any trial of its own has pretrained anything: the earlier sweep's best backbone (1.0).
    first, second, third = (warm.suggest(f"w{i}") for i in range(3))
    assert backbone(first) == backbone(second) == backbone(configs[1])
    assert backbone(third) != backbone(configs[1])  # two trials of this sweep on it: its share is used


def _pick_by_definition(s: BackboneSharingSearch) -> dict | None:
    """The pick as the module docstring defines it, looking at every backbone."""
    share = s.sharing
    k = share.trials_per_backbone
    open_groups = [g for g in s.groups.values() if g["ready"] and not g["failed"] and len(g["trials"]) < k]
    if not open_groups:
        return None
    if share.pick == "oldest":
        return min(open_groups, key=lambda g: g["order"])
    scored = [g["score"] for g in s.groups.values() if g["score"] is not None and not g["failed"]]
    candidates = [g for g in open_groups if g["score"] is not None]
    if not candidates:
        return None
    best = min(candidates, key=lambda g: g["score"])
    better = sum(v < best["score"] for v in scored)
    return best if better < max(1.0, share.top_fraction * len(scored)) else None


@pytest.mark.parametrize("seed", range(6))
def test_the_pick_equals_its_definition_over_a_random_sweep(seed):
    """The pick keeps heaps and a sorted list rather than looking at every backbone; at every suggestion
    it must choose what looking at every backbone chooses: pretraining finishing out of order, divergence,
    trials rescored at the first rung, full backbones."""
    import random

    rng = random.Random(seed)
    pick = ["best", "oldest"][seed % 2]
    s = searcher(trials_per_backbone=rng.choice([2, 3, 4]), pick=pick, top_fraction=rng.choice([0.3, 1.0]))
    running: dict[str, int] = {}
    picks = 0
    for i in range(150):
        expected = _pick_by_definition(s)
        assert s._pick() is expected, i
        picks += expected is not None
        s.suggest(f"t{i}")
        running[f"t{i}"] = 0
        for trial in rng.sample(sorted(running), k=min(len(running), 3)):  # some trials advance an epoch
            running[trial] += 1
            epoch = running[trial]
            if rng.random() < 0.05 and epoch <= PRETRAIN:
                s.on_trial_complete(trial, {"objective": float("nan"), "diverged": True, "epoch": epoch,
                                            "finetune_epoch": 0, "total_epochs": 5})  # fmt: skip
                del running[trial]
                continue
            report(s, trial, epoch, round(rng.uniform(0, 4), 1))  # ties happen
            if epoch >= PRETRAIN + 2 or (epoch > PRETRAIN and rng.random() < 0.3):
                del running[trial]
    assert picks > 20  # the sweep reused backbones, so the picks compared were not all None


def test_a_checkpoint_without_the_heaps_restores_the_same_picks(tmp_path):
    """A sweep checkpointed by a version whose searcher kept only `groups` resumes with the same picks."""
    s = searcher(trials_per_backbone=3, pick="best", top_fraction=1.0)
    for i in range(4):
        s.suggest(f"t{i}")
        report(s, f"t{i}", PRETRAIN + 1, float(4 - i))  # pretrained and scored at the first rung
    s._open_by_order, s._open_by_score, s._scores = [], [], []  # as an older version saved it
    s.save(str(tmp_path / "searcher.pkl"))
    restored = searcher(trials_per_backbone=3, pick="best", top_fraction=1.0)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored._pick() is _pick_by_definition(restored) is not None

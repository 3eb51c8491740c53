"""The backbone store and a run's reuse of it: exact fine-tuning from a stored backbone, atomic entries,
refused entries (corrupt, truncated, foreign, another model) pretrained again and never loaded, and
`ecgtune backbones ls|rm`."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from synthetic import write_synthetic_store, write_trial_stores

from ecgtune.backbones import BackboneStore, EntryRefused
from ecgtune.backbones.store import ENTRY_FILE, QUARANTINE_DIR
from ecgtune.cli import main
from ecgtune.reuse import SharedPretraining
from ecgtune.spec import spec_from_dict
from ecgtune.stages import TwoStageRun

TIMING_KEYS = {"epoch_seconds", "train_seconds", "train_ecgs_per_s"}
REUSE_KEYS = {"reused_epoch", "backbone", "backbone_key", "backbone_from", "backbone_saved_seconds"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_trial_stores(tmp_path_factory.mktemp("stores"))


def make_spec(stores: Path, finetune_lr: float = 1e-3, finetune_store: str = "ptbxl", **pretrain):
    return spec_from_dict(
        {
            "name": "reuse",
            "model": {
                "name": "resnet_tiny",
                "params": {"num_blocks": 1, "stem_widths": [8, 8], "block_widths": [8, 8], "dropout": 0.2},
            },
            "targets": ["hr", "pr", "qrs", "qt"],
            "data": {
                "pretrain": {"path": str(stores / "deepfake")},
                "finetune": {"path": str(stores / finetune_store)},
            },
            "stages": {
                "pretrain": {"epochs": 2, "batch_size": 8, **pretrain},
                "finetune": {"epochs": 2, "batch_size": 8, "lr": finetune_lr},
            },
        }
    )


def train(spec, store: BackboneStore | None, holder: str = "t1", logs: list | None = None):
    torch.set_num_threads(1)
    run = TwoStageRun(spec, device="cpu")
    shared = SharedPretraining(
        run, store, holder, {"trial": holder, "sweep": "s1"}, log=(logs if logs is not None else []).append
    )
    shared.prepare()
    results = []
    try:
        while not run.done:
            results.append(shared.tag(run.step()))
            shared.after_step()
    finally:
        shared.close()
    return run, results, shared


def same_numbers(a: dict, b: dict) -> bool:
    keys = (set(a) | set(b)) - TIMING_KEYS - REUSE_KEYS - {"total_epochs"}
    return all(a.get(k) == b.get(k) or (_nan(a.get(k)) and _nan(b.get(k))) for k in keys)


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def test_a_trial_reusing_a_backbone_fine_tunes_exactly_as_the_one_that_pretrained_it(stores, tmp_path):
    # The model has dropout, so pretraining draws from torch's generator: fine-tuning must not depend on
    # where pretraining left it (TwoStageRun seeds it when fine-tuning starts).
    store = BackboneStore(tmp_path / "bb")
    first, first_results, s1 = train(make_spec(stores), store, "t1")
    assert s1.origin == "pretrained" and store.has(s1.key)
    second, second_results, s2 = train(make_spec(stores), store, "t2")
    assert s2.origin == "reused" and s2.key == s1.key
    # Identical weights and metrics to the last digit, every epoch, the reused pretraining epochs included.
    w1, w2 = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert [r["epoch"] for r in second_results] == [1, 2, 3, 4]
    assert all(same_numbers(a, b) for a, b in zip(first_results, second_results, strict=True))
    assert [r.get("reused_epoch", False) for r in second_results] == [True, True, False, False]
    assert second_results[0]["backbone_from"] == "trial t1 (sweep s1)"
    assert second_results[0]["backbone_saved_seconds"] > 0
    # ...and as a run that never saw a store.
    alone, alone_results, _ = train(make_spec(stores), None)
    assert all(torch.equal(alone.model.state_dict()[k], w2[k]) for k in w2)
    assert all(same_numbers(a, b) for a, b in zip(alone_results, second_results, strict=True))
    # Fine-tuning settings are not in the key: another fine-tuning lr reuses the same backbone.
    _, _, s3 = train(make_spec(stores, finetune_lr=3e-3), store, "t3")
    assert s3.origin == "reused" and s3.key == s1.key
    # Pretraining settings are: another pretraining lr pretrains its own.
    _, _, s4 = train(make_spec(stores, lr=3e-3), store, "t4")
    assert s4.origin == "pretrained" and s4.key != s1.key


def test_a_checkpoint_taken_while_replaying_reused_epochs_resumes_exactly(stores, tmp_path):
    store = BackboneStore(tmp_path / "bb")
    train(make_spec(stores), store, "t1")
    torch.set_num_threads(1)
    run = TwoStageRun(make_spec(stores), device="cpu")
    shared = SharedPretraining(run, store, "t2")
    shared.prepare()
    first = run.step()  # the first reused pretraining epoch
    run.save(tmp_path / "ckpt")
    resumed = TwoStageRun(make_spec(stores), device="cpu")
    resumed.load(tmp_path / "ckpt")
    SharedPretraining(resumed, store, "t2").prepare()  # resumed in fine-tuning: nothing to decide
    rest = [resumed.step() for _ in range(3)]
    assert first["epoch"] == 1 and [r["epoch"] for r in rest] == [2, 3, 4]
    assert rest[0]["reused_epoch"] is True and "reused_epoch" not in rest[1]
    _, straight, _ = train(make_spec(stores), store, "t3")
    assert all(same_numbers(a, b) for a, b in zip(straight, [first, *rest], strict=True))


def test_another_finetuning_store_reads_the_backbone_out_on_its_own_validation_fold(stores, tmp_path):
    write_synthetic_store(stores / "ptbxl2", 30, seed=5, gain=1.2, source="ptbxl")
    store = BackboneStore(tmp_path / "bb")
    _, pretrained_results, _ = train(make_spec(stores), store, "t1")
    run, results, shared = train(make_spec(stores, finetune_store="ptbxl2"), store, "t2")
    assert shared.origin == "reused"
    _, alone, _ = train(make_spec(stores, finetune_store="ptbxl2"), None)
    # The read-out of the last pretraining epoch is this store's, as if it had pretrained itself; the
    # DeepFake metrics are the pretraining run's.
    assert results[1]["objective"] == alone[1]["objective"] != pretrained_results[1]["objective"]
    assert results[0]["readout"] == "loaded backbone"
    assert results[0]["deepfake_val_objective"] == pretrained_results[0]["deepfake_val_objective"]
    assert all(same_numbers(a, b) for a, b in zip(alone[2:], results[2:], strict=True))


def _entry(store: BackboneStore, key: str) -> tuple[Path, dict]:
    d = Path(store.root) / key
    return d, json.loads((d / ENTRY_FILE).read_text())


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "foreign", "not json", "another model"])
def test_a_damaged_entry_is_refused_in_one_line_moved_aside_and_pretrained_again(stores, tmp_path, damage):
    store = BackboneStore(tmp_path / "bb")
    _, clean, s1 = train(make_spec(stores), store, "t1")
    d, meta = _entry(store, s1.key)
    weights = d / meta["weights"]
    if damage == "corrupt":
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "foreign":
        meta["material"]["seed"] = 99
        (d / ENTRY_FILE).write_text(json.dumps(meta))
    elif damage == "not json":
        (d / ENTRY_FILE).write_text("{half an entry")
    else:  # weights of another network, checksummed as if they belonged
        other = {"w": torch.zeros(3)}
        torch.save(other, weights)
        meta["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        meta["bytes"] = weights.stat().st_size
        (d / ENTRY_FILE).write_text(json.dumps(meta))
    logs: list[str] = []
    run, results, s2 = train(make_spec(stores), store, "t2", logs)
    assert s2.origin == "pretrained", "a damaged entry was loaded"
    assert len(logs) == 1 and s1.key in logs[0] and str(store.uri) in logs[0], logs
    assert "\n" not in logs[0]
    assert all(same_numbers(a, b) for a, b in zip(clean, results, strict=True))
    # Moved aside (kept for a look), and a good entry written in its place.
    assert len(list((Path(store.root) / QUARANTINE_DIR).iterdir())) == 1
    assert store.get(s1.key, s1.material) is not None


def test_get_refuses_before_loading(stores, tmp_path):
    store = BackboneStore(tmp_path / "bb")
    _, _, s1 = train(make_spec(stores), store, "t1")
    d, meta = _entry(store, s1.key)
    (d / meta["weights"]).write_bytes(b"\0" * meta["bytes"])
    with pytest.raises(EntryRefused, match=f"backbone {s1.key} in .*corrupt"):
        store.get(s1.key, s1.material)


def test_a_half_written_entry_is_not_there(stores, tmp_path):
    store = BackboneStore(tmp_path / "bb")
    _, _, s1 = train(make_spec(stores), store, "t1")
    d, meta = _entry(store, s1.key)
    (d / ENTRY_FILE).unlink()  # a writer that died between the weights and entry.json
    assert not store.has(s1.key) and store.get(s1.key, s1.material) is None
    _, _, s2 = train(make_spec(stores), store, "t2")
    assert s2.origin == "pretrained" and store.has(s1.key)
    assert not list(Path(store.root).rglob("*.tmp")), "a temporary file was left behind"


def test_entries_are_never_replaced(stores, tmp_path):
    store = BackboneStore(tmp_path / "bb")
    run, _, s1 = train(make_spec(stores), store, "t1")
    d, meta = _entry(store, s1.key)
    backbone = store.get(s1.key, s1.material)
    backbone.provenance = {"trial": "someone else"}
    assert store.put(backbone) is False
    assert _entry(store, s1.key)[1] == meta


def test_backbones_ls_and_rm(stores, tmp_path, capsys):
    store = BackboneStore(tmp_path / "bb")
    _, _, s1 = train(make_spec(stores), store, "t1")
    _, _, s2 = train(make_spec(stores, lr=3e-3), store, "t2")
    assert main(["backbones", "ls", str(store.uri)]) == 0
    out = capsys.readouterr().out
    assert s1.key in out and s2.key in out and "2 backbones" in out and "lr 0.003" in out
    assert "trial t2 of s1" in out
    # rm removes entries of a store, and nothing else.
    user_dir = tmp_path / "mine"
    (user_dir / s1.key).mkdir(parents=True)
    (user_dir / s1.key / ENTRY_FILE).write_text("{}")
    assert main(["backbones", "rm", str(user_dir), s1.key]) == 2
    assert (user_dir / s1.key / ENTRY_FILE).exists()
    assert main(["backbones", "rm", str(store.uri), "0123456789abcdef"]) == 2
    err = capsys.readouterr().err
    assert "not a backbone store" in err and "no entry '0123456789abcdef'" in err
    assert main(["backbones", "rm", str(store.uri), s1.key]) == 0
    assert not store.has(s1.key) and store.has(s2.key)


def test_a_pretraining_only_run_shares_its_backbone_both_ways(stores, tmp_path):
    """paper.yaml's DeepFake-only variants pretrain what its transfer variants pretrain (one key)."""
    store = BackboneStore(tmp_path / "bb")
    only = make_spec(stores).model_copy(
        update={
            "stages": make_spec(stores).stages.model_copy(
                update={"finetune": make_spec(stores).stages.finetune.model_copy(update={"epochs": 0})}
            )
        }
    )
    run, results, shared = train(only, store, "pretrain-only")
    assert shared.origin == "pretrained" and store.has(shared.key) and len(results) == 2
    full, full_results, s2 = train(make_spec(stores), store, "transfer")
    assert s2.origin == "reused" and s2.key == shared.key
    again, again_results, s3 = train(only, store, "pretrain-only-again")
    assert s3.origin == "reused" and [r["epoch"] for r in again_results] == [1, 2]
    assert all(
        torch.equal(run.model.state_dict()[k], again.model.state_dict()[k]) for k in run.model.state_dict()
    )
    assert all(same_numbers(a, b) for a, b in zip(results, again_results, strict=True))

"""The backbone key holds exactly what pretraining depends on: every key a spec can hold is either in the
key (changing it changes the key) or cannot change the pretrained weights (proved by pretraining a tiny
backbone with it changed and finding every weight identical)."""

from __future__ import annotations

import copy
import shutil
import types
import typing

import pytest
import torch
from pydantic import BaseModel
from synthetic import write_trial_stores

from ecgtune.backbones import backbone_key, key_material
from ecgtune.data.store import ECGStore
from ecgtune.spec import Spec, spec_from_dict
from ecgtune.stages import TwoStageRun

# The leaves of a spec (dotted paths through the schema; a mapping-valued field is one leaf).
IN_KEY = {
    "model.name",
    "model.params",
    "targets",
    "data.pretrain.path",  # through the store's content key, not its path (tested apart)
    "data.pretrain.demo",
    "seed",
} | {
    f"stages.pretrain.{f}"
    for f in Spec.model_fields["stages"].annotation.model_fields["pretrain"].annotation.model_fields
}
# Why each of the others cannot change the weights after the last pretraining epoch.
NOT_IN_KEY = {
    "version": "the spec format; another version is refused before anything runs",
    "name": "a label",
    "data.finetune.path": "read only from fine-tuning on (and by the zero-shot read-outs, which are metrics)",
    "data.finetune.demo": "as data.finetune.path",
    "stages.transfer.keep_head": "used when fine-tuning starts",
    "search": "a trial's own spec has none (trial_spec drops it)",
    "variants": "a trial's own spec has none (apply_variant resolves it)",
    "resources.cpu": "hardware: threads round differently, but train the same backbone (in the provenance)",
    "resources.gpu": "hardware",
    "resources.cpu_fallback": "hardware",
    "origin": "free-form notes of `ecgtune export`",
}
FINETUNE_FIELDS = Spec.model_fields["stages"].annotation.model_fields["finetune"].annotation.model_fields
NOT_IN_KEY |= {f"stages.finetune.{f}": "a fine-tuning setting" for f in FINETUNE_FIELDS}
RUN_FIELDS = Spec.model_fields["run"].annotation.model_fields
NOT_IN_KEY |= {f"run.{f}": "where and how trials run and are stored" for f in RUN_FIELDS}


def _leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        tp = field.annotation
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp
        if isinstance(inner, type) and issubclass(inner, BaseModel) and name not in ("search",):
            out += _leaves(inner, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_leaf_of_a_spec_is_classified():
    leaves = set(_leaves(Spec))
    unclassified = leaves - IN_KEY - set(NOT_IN_KEY)
    assert not unclassified, (
        f"classify these spec keys for the backbone key (ecgtune/backbones/key.py): {unclassified}"
    )
    assert not (leaves ^ (IN_KEY | set(NOT_IN_KEY))) - leaves, "a classified key no longer exists"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_trial_stores(tmp_path_factory.mktemp("stores"))


def base_dict(stores) -> dict:
    return {
        "name": "keytest",
        "model": {
            "name": "resnet_tiny",
            "params": {"num_blocks": 1, "stem_widths": [8, 8], "block_widths": [8, 8]},
        },
        "targets": ["hr", "pr", "qrs", "qt"],
        "data": {"pretrain": {"path": str(stores / "deepfake")}, "finetune": {"path": str(stores / "ptbxl")}},
        "stages": {
            "pretrain": {"epochs": 1, "batch_size": 8, "samples_per_epoch": 16},
            "finetune": {"epochs": 1, "batch_size": 8},
        },
    }


def _changed(d: dict, leaf: str, stores) -> dict:
    """`d` with `leaf` set to another valid value."""
    d = copy.deepcopy(d)
    special = {
        "version": None,  # refused before any run: nothing to pretrain
        "name": "other",
        "model.name": "resnet",
        "model.params": {"num_blocks": 2, "stem_widths": [8, 8], "block_widths": [8, 8]},
        "targets": ["hr", "qt"],
        "seed": 7,
        "data.finetune.path": str(stores / "ptbxl-copy"),
        "data.finetune.demo": None,
        "data.pretrain.demo": None,
        "stages.transfer.keep_head": True,
        "search": {"space": {"finetune.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}, "num_samples": 2},
        "variants": None,
        "origin": {"from": "elsewhere"},
        "resources.cpu": 2,
        "resources.gpu": 0.5,
        "resources.cpu_fallback": True,
    }
    node, parts = d, leaf.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if leaf in special:
        node[parts[-1]] = special[leaf]
        return d
    section, _, field = leaf.partition(".")
    fields = (
        Spec.model_fields["stages"].annotation.model_fields[parts[1]].annotation.model_fields
        if section == "stages"
        else Spec.model_fields[section].annotation.model_fields
    )
    default = node.get(parts[-1], fields[parts[-1]].default)
    node[parts[-1]] = _other(parts[-1], default)
    return d


def _other(name: str, value):
    alternatives = {
        "schedule": "constant",
        "loss": "huber",
        "grad_clip": 0.5,
        "samples_per_epoch": 8,
        "freeze_backbone_epochs": 1,
        "storage_path": "elsewhere",
        "backbones": "/tmp/elsewhere",
        "optuna_storage": "sqlite:///elsewhere.db",
    }
    if name in alternatives:
        return alternatives[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 if value else 0.1
    raise AssertionError(f"no alternative value for {name}={value!r}: add one to _other")


def _pretrain(spec: Spec) -> tuple[dict, list]:
    torch.set_num_threads(1)
    run = TwoStageRun(spec, device="cpu")
    while run.stage == "pretrain" and not run.done:
        run.step()
    return run.pretrained, [
        {k: v for k, v in e.items() if k.startswith("deepfake_val_") or k == "train_loss"}
        for e in run.pretrain_history
    ]


def _key(spec: Spec) -> str:
    return backbone_key(key_material(spec, ECGStore(spec.data.pretrain.path).key))


def test_keys_outside_the_key_do_not_change_the_pretrained_weights(stores):
    shutil.copytree(stores / "ptbxl", stores / "ptbxl-copy", dirs_exist_ok=True)
    base = spec_from_dict(base_dict(stores))
    weights, metrics = _pretrain(base)
    for leaf, why in NOT_IN_KEY.items():
        if leaf in ("version", "search", "variants", "data.finetune.demo"):
            continue  # never part of a trial's spec (see NOT_IN_KEY); data.finetune.demo: path's twin
        changed = Spec.model_validate(_changed(base_dict(stores), leaf, stores))
        assert _key(changed) == _key(base), leaf
        w, m = _pretrain(changed)
        assert all(torch.equal(w[k], weights[k]) for k in weights), (
            f"{leaf} ({why}) changed the pretrained weights"
        )
        assert m == metrics, leaf


def test_keys_in_the_key_change_it(stores):
    base = spec_from_dict(base_dict(stores))
    for leaf in sorted(IN_KEY):
        if leaf.startswith("data.pretrain"):
            continue  # below: the store's content, not its path or name
        changed = Spec.model_validate(_changed(base_dict(stores), leaf, stores))
        assert _key(changed) != _key(base), f"{leaf} is declared part of the key but does not change it"


def test_the_pretraining_store_counts_by_content_not_path(stores, tmp_path):
    base = spec_from_dict(base_dict(stores))
    shutil.copytree(stores / "deepfake", tmp_path / "same-content")

    def with_pretrain_store(path) -> Spec:
        d = base_dict(stores)
        d["data"]["pretrain"] = {"path": str(path)}
        return spec_from_dict(d)

    assert _key(with_pretrain_store(tmp_path / "same-content")) == _key(base)
    assert _key(with_pretrain_store(stores / "ptbxl")) != _key(base)


def test_one_network_written_two_ways_is_one_key(stores):
    d = base_dict(stores)
    d["model"] = {"name": "resnet_paper_k3", "params": {}}
    preset = spec_from_dict(d)
    d["model"] = {
        "name": "resnet",
        "params": {"stem_widths": [64, 32], "stem_kernels": [8, 3], "block_widths": [64, 32], "num_blocks": 8,
                   "block_kernel": 3, "dropout": 0, "negative_slope": 0.1},
    }  # fmt: skip
    spelt_out = spec_from_dict(d)
    assert _key(preset) == _key(spelt_out)

"""Spec tests: every shipped sweep loads, round trips hold, and each kind of bad spec is rejected with
a message naming the file and the key path. Models are only ever built on the meta device here."""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from ecgtune.shipped import SWEEPS_DIR
from ecgtune.spec import (
    Spec,
    SpecError,
    StageSpec,
    apply_params,
    apply_variant,
    describe_space,
    dump_spec,
    load_spec,
    spec_from_dict,
)
from ecgtune.train import TrainConfig

SWEEPS = SWEEPS_DIR
SHIPPED = sorted(SWEEPS.glob("*.yaml"))


def raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------------------------ shipped sweeps


def test_the_expected_sweeps_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= {"smoke", "resnet_widths", "vit_patch_depth", "paper"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_sweep_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.search is not None
    out = tmp_path / "again.yaml"
    dump_spec(spec, out)
    assert load_spec(out) == spec
    assert describe_space(spec.search.space).count("\n") == max(len(spec.search.space) - 1, 0)


def test_smoke_sweep_is_small_and_on_demo_data() -> None:
    spec = load_spec(SWEEPS / "smoke.yaml")
    assert spec.resources.gpu == 0 and spec.resources.cpu == 1
    assert spec.data.pretrain is not None and spec.data.pretrain.demo == "deepfake"
    assert spec.data.finetune.demo == "ptbxl"
    assert spec.search.num_samples == 12 and spec.search.max_concurrent_trials == 2
    assert spec.stages.pretrain.samples_per_epoch is None and spec.stages.finetune.samples_per_epoch == 880
    assert spec.search.space["model.stem_widths.1"].same_as == "model.block_widths.1"
    # The demo's promise: its sweep shows reuse, and its time is bounded whatever TPE samples.
    assert spec.search.backbones is not None and spec.search.time_budget_s == 200


def test_paper_variants_are_the_seven_experiments() -> None:
    spec = load_spec(SWEEPS / "paper.yaml")
    assert spec.search.space == {} and spec.search.asha is None
    runs = {name: apply_variant(spec, name) for name in spec.variants}
    assert len(runs) == 7
    shape = {
        name: (r.model.name, r.data.pretrain is not None, r.stages.finetune.epochs > 0)
        for name, r in runs.items()
    }
    assert shape == {
        "fc_baseline": ("fc_paper", True, False),
        "resnet_deepfake": ("resnet_paper", True, False),
        "resnet_ptbxl": ("resnet_paper", False, True),
        "resnet_transfer": ("resnet_paper", True, True),
        "vit_deepfake": ("vit_paper", True, False),
        "vit_ptbxl": ("vit_paper", False, True),
        "vit_transfer": ("vit_paper", True, True),
    }
    for name, run in runs.items():
        assert run.name == f"paper.{name}" and run.search is None and run.variants is None
    with pytest.raises(SpecError, match="unknown variant 'vit_big'; variants: fc_baseline"):
        apply_variant(spec, "vit_big")


def test_variant_knobs_follow_the_variant_model_in_any_order() -> None:
    d = raw("paper")
    d["variants"] = {
        "small_vit": {"model.params.patch_size": 25, "model.name": "vit_tiny", "stages.finetune.lr": 1e-4},
        "k3": {"model.params.block_kernel": 3, "model.params.stem_widths.0": 32},
    }
    spec = spec_from_dict(d)
    small = apply_variant(spec, "small_vit")
    assert small.model.name == "vit_tiny" and small.model.params == {"patch_size": 25}
    assert small.stages.finetune.lr == 1e-4
    k3 = apply_variant(spec, "k3")
    assert k3.model.params == {"block_kernel": 3, "stem_widths": [32, 32]}  # resnet_paper's (64, 32)


# --------------------------------------------------------------------------------------- bad specs


def setting(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Mutation: set `a/b/c` (slash-separated, since search-space keys contain dots)."""

    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = d
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def removing(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = d
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


def space(key: str, **dist: Any) -> Callable[[dict[str, Any]], None]:
    return setting(f"search/space/{key}", dist)


# (base sweep, mutation, substrings the message must contain besides the file name)
BAD: dict[str, tuple[str, Callable[[dict[str, Any]], None], list[str]]] = {
    "typo in grace_period": (
        "smoke",
        setting("search/asha/grace_perod", 1),
        ["unknown key 'grace_perod' in search.asha; allowed: clock, grace_period, reduction_factor"],
    ),
    "unknown top-level key": (
        "smoke",
        setting("serach", {}),
        ["unknown key 'serach' at top level", "search"],
    ),
    "grace period 0": (
        "smoke",
        setting("search/asha/grace_period", 0),
        ["search.asha.grace_period: Input should be greater than or equal to 1 (got 0)"],
    ),
    "wrong type": (
        "smoke",
        setting("stages/finetune/epochs", "three"),
        ["stages.finetune.epochs:", "'three'"],
    ),
    "missing key": (
        "smoke",
        removing("stages/finetune/epochs"),
        ["missing required key 'epochs' in stages.finetune"],
    ),
    "empty range": (
        "smoke",
        space("model.num_blocks", type="int", low=5, high=3),
        ["search.space.model.num_blocks: empty range low=5 > high=3"],
    ),
    "log with low 0": (
        "smoke",
        space("finetune.lr", type="float", low=0, high=0.1, log=True),
        ["search.space.finetune.lr: log scale needs low > 0"],
    ),
    "empty choices": (
        "smoke",
        space("model.block_kernel", type="categorical", choices=[]),
        ["search.space.model.block_kernel:", "non-empty"],
    ),
    "non-scalar choice": (
        "smoke",
        space("model.block_kernel", type="categorical", choices=[[3, 5], 7]),
        ["search.space.model.block_kernel: choice [3, 5] is not a scalar"],
    ),
    "unknown model": (
        "smoke",
        setting("model/name", "resnet50"),
        ["model.name: unknown model 'resnet50'", "resnet_tiny"],
    ),
    "unknown target": ("smoke", setting("targets", ["hr", "qtc"]), ["targets:", "'qtc'", "allowed"]),
    "impossible ViT patch size, fixed": (
        "vit_patch_depth",
        setting("model/params/patch_size", 7),
        ["model.params: patch_size=7 must divide signal_length=5000", "250"],
    ),
    "impossible ViT patch size, searched": (
        "vit_patch_depth",
        space("model.patch_size", type="categorical", choices=[50, 7]),
        ["search.space.model.patch_size: choice 7 is impossible: patch_size=7 must divide"],
    ),
    "heads divide no embed dim": (
        "vit_patch_depth",
        space("model.num_heads", type="categorical", choices=[5, 7], divides="model.embed_dim"),
        ["search.space.model.num_heads: no choice in [5, 7] divides model.embed_dim=64"],
    ),
    "heads leave one embed dim without a choice": (
        "vit_patch_depth",
        space("model.embed_dim", type="categorical", choices=[64, 81, 128]),  # 81 is odd
        ["search.space.model.num_heads: no choice in [2, 4, 6, 8, 12] divides model.embed_dim=81"],
    ),
    "heads searched without divides": (
        "vit_patch_depth",
        space("model.num_heads", type="categorical", choices=[2, 4, 8]),
        ["search.space.model.embed_dim: choice 64 is impossible", "num_heads (12)"],
    ),
    "unknown search-space prefix": (
        "smoke",
        space("optim.lr", type="float", low=1e-4, high=1e-2),
        ["search.space.optim.lr: unknown prefix 'optim'; allowed: model.<knob>"],
    ),
    "unknown stage field": (
        "smoke",
        space("finetune.lrr", type="float", low=1e-4, high=1e-2),
        ["search.space.finetune.lrr: unknown stage field 'lrr'; allowed: epochs, batch_size, lr"],
    ),
    "grace period beyond the fine-tuning epochs": (
        "smoke",
        setting("search/asha/grace_period", 11),
        ["search.asha.grace_period: 11 is more than the 8 fine-tuning epochs ASHA counts"],
    ),
    "grace period beyond all epochs": (
        "smoke",
        lambda d: d["search"]["asha"].update(clock="all", grace_period=13),
        ["search.asha.grace_period: 13 is more than the 10 epochs a trial trains (pretrain 2 + finetune 8)"],
    ),
    "unknown ASHA clock": (
        "smoke",
        setting("search/asha/clock", "pretrain"),
        ["search.asha.clock", "'finetune' or 'all'"],
    ),
    "freeze beyond the epochs": (
        "smoke",
        setting("stages/finetune/freeze_backbone_epochs", 11),
        ["stages.finetune.freeze_backbone_epochs: 11 is more than the stage's 8 epochs"],
    ),
    "store with path and demo": (
        "smoke",
        setting("data/finetune", {"path": "ptbxl", "demo": "ptbxl"}),
        ["data.finetune: give exactly one of 'path' or 'demo' (got both)"],
    ),
    "misspelt fixed knob": (
        "vit_patch_depth",
        setting("model/params/patch_sise", 50),
        ["model.params.patch_sise: unknown knob for vit; allowed:", "patch_size"],
    ),
    "misspelt searched knob": (
        "smoke",
        space("model.block_kernal", type="categorical", choices=[3]),
        ["search.space.model.block_kernal: unknown knob for resnet", "block_kernel"],
    ),
    "float range over an int knob": (
        "smoke",
        space("model.num_blocks", type="float", low=2, high=4),
        ["search.space.model.num_blocks: value 2.0 is impossible", "valid integer"],
    ),
    "residual widths untied": (
        "smoke",
        removing("search/space/model.stem_widths.1"),
        ["search.space.model.block_widths.1: choice 16 is impossible", "stem_widths[-1]"],
    ),
    "list index out of range": (
        "smoke",
        space("model.block_widths.2", type="int", low=8, high=16),
        ["search.space.model.block_widths.2: index 2 out of range"],
    ),
    "same_as to nothing": (
        "smoke",
        space("model.stem_widths.1", type="same_as", same_as="model.block_width.1"),
        ["search.space.model.stem_widths.1: 'model.block_width.1' is neither a key of search.space"],
    ),
    "same_as cycle": (
        "smoke",
        space("model.block_widths.1", type="same_as", same_as="model.stem_widths.1"),
        ["search.space: same_as/divides cycle"],
    ),
    "searched epochs": (
        "smoke",
        space("finetune.epochs", type="int", low=1, high=3),
        ["search.space.finetune.epochs: epochs set the clock ASHA"],
    ),
    "reserved knob": (
        "smoke",
        setting("model/params/num_outputs", 2),
        ["model.params.num_outputs: num_outputs is set"],
    ),
    "step with log": (
        "smoke",
        space("finetune.lr", type="float", low=1e-4, high=1e-2, log=True, step=1e-4),
        ["search.space.finetune.lr: step cannot be combined with log"],
    ),
    "variant key outside the spec": (
        "paper",
        setting("variants/resnet_ptbxl/pretrain.epochs", 3),
        ["variants.resnet_ptbxl: pretrain.epochs: a variant cannot set 'pretrain'"],
    ),
    "variant typo": (
        "paper",
        setting("variants/resnet_ptbxl/stages.finetune.epohcs", 3),
        ["variants.resnet_ptbxl: unknown key 'epohcs' in stages.finetune", "(did you mean 'epochs'?)"],
    ),
    "variants beside a search space": (
        "paper",
        setting("search/space", {"finetune.lr": {"type": "float", "low": 1e-4, "high": 1e-3}}),
        ["search.space: must be empty when variants are given"],
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_spec_is_rejected_naming_file_and_key(case: str, tmp_path: Path) -> None:
    base, mutate, expected = BAD[case]
    data = copy.deepcopy(raw(base))
    mutate(data)
    path = tmp_path / "bad_sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), line
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


def test_spec_error_is_a_value_error_with_problems() -> None:
    with pytest.raises(ValueError) as info:
        spec_from_dict({**raw("smoke"), "seed": "x", "serach": 1}, source="here")
    assert isinstance(info.value, SpecError)
    assert len(info.value.problems) == 2 and info.value.source == "here"


def test_file_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read the file"):
        load_spec(missing)
    listing = tmp_path / "list.yaml"
    listing.write_text("- name: smoke\n")
    with pytest.raises(SpecError, match=r"list\.yaml: expected a mapping of keys .* got list"):
        load_spec(listing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [smoke\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML: .*line"):
        load_spec(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SpecError, match=r"empty\.yaml: expected a mapping .* got NoneType"):
        load_spec(empty)


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    """A Python tag would run code under yaml.load; the safe loader refuses it."""
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match=r"evil\.yaml: not valid YAML: .*python/object"):
        load_spec(evil)


def test_hostile_files_fail_fast_with_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    """Each of these once ended in a traceback, a message without the file, or 39 s of alias expansion."""
    from ecgtune.cli import main

    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\nmodel: " + "[" * 3000 + "]" * 3000 + "\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: smoke\n\xff\xfe: 1\n")
    bomb = tmp_path / "bomb.yaml"
    levels = ["  a0: &a0 [x, x, x, x]"] + [
        f"  a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)
    ]
    bomb.write_text((SWEEPS / "smoke.yaml").read_text() + "origin:\n" + "\n".join(levels) + "\n")
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\n" + "# padding\n" * 200_000)
    expected = {
        deep: "nested deeper than",
        binary: "not UTF-8 text",
        bomb: "expands to more than",
        huge: "larger than",
    }
    for path, says in expected.items():
        assert main(["validate", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and says in err[0], err


@pytest.mark.parametrize(
    "dist",
    [
        {"type": "float", "low": 0, "high": float("nan")},
        {"type": "float", "low": 1e-5, "high": float("inf"), "log": True},
        {"type": "float", "low": float("-inf"), "high": 0.5},
        {"type": "categorical", "choices": [0.1, float("nan")]},
    ],
    ids=["nan-high", "inf-log-high", "minus-inf-low", "nan-choice"],
)
def test_non_finite_numbers_are_refused_wherever_they_stand(tmp_path: Path, dist: dict[str, Any]) -> None:
    data = raw("smoke")
    data["search"]["space"]["model.dropout"] = dist
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"nan\.yaml: search\.space\.model\.dropout\..*not a finite number"):
        load_spec(path)
    fixed = raw("smoke")
    fixed["stages"]["finetune"]["lr"] = float("nan")
    with pytest.raises(SpecError, match=r"stages\.finetune\.lr: not a finite number"):
        spec_from_dict(fixed, source="x")


def test_a_missing_optional_labeller_is_one_line(tmp_path: Path, capsys) -> None:
    import importlib.util

    from ecgtune.cli import main

    if importlib.util.find_spec("ecgdeli") is not None:
        pytest.skip("ecgdeli is installed here")
    assert main(["data", "generate", "-n", "1", "-o", str(tmp_path / "g"), "--labeller", "ecgdeli"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'ecgtune[ecgdeli]'" in err[0]


def test_duplicate_keys_are_refused_and_exponents_are_floats(tmp_path: Path) -> None:
    text = (SWEEPS / "smoke.yaml").read_text()
    dup = tmp_path / "dup.yaml"
    dup.write_text(text.replace("seed: 0\n", "seed: 0\nseed: 1\n", 1))
    with pytest.raises(SpecError, match=r"dup\.yaml: not valid YAML: duplicate key 'seed'"):
        load_spec(dup)
    # YAML 1.1 (PyYAML) reads `1e-3` as a string; specs read it as the float everyone means.
    exp = tmp_path / "exp.yaml"
    exp.write_text(text.replace("lr: 3.0e-3", "lr: 3e-3"))
    assert load_spec(exp).stages.finetune.lr == 3e-3


def test_dump_round_trips_odd_values_and_replaces_atomically(tmp_path: Path) -> None:
    spec = spec_from_dict({**raw("smoke"), "origin": {"note": "1e5", "flag": "yes", "n": None}})
    out = tmp_path / "spec.yaml"
    out.write_text("old contents")
    dump_spec(spec, out)
    assert load_spec(out) == spec
    assert load_spec(out).origin == {"note": "1e5", "flag": "yes", "n": None}
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]  # no temp file left behind


# ------------------------------------------------------------------------------------- apply_params


def test_apply_params_sets_nested_values_and_leaves_the_spec_alone() -> None:
    spec = load_spec(SWEEPS / "smoke.yaml")
    before = spec.model_dump()
    params = {
        "model.block_widths.0": 24,
        "model.block_widths.1": 8,
        "model.stem_widths.1": 8,
        "model.num_blocks": 3,
        "model.block_kernel": 9,
        "finetune.lr": 3e-3,
        "pretrain.batch_size": 8,
        "transfer.keep_head": True,
    }
    run = apply_params(spec, params)
    assert run.model.params["block_widths"] == [24, 8]
    assert run.model.params["stem_widths"] == [16, 8]
    assert run.model.params["num_blocks"] == 3 and run.model.params["block_kernel"] == 9
    assert run.stages.finetune.lr == 3e-3 and run.stages.pretrain.batch_size == 8
    assert run.stages.transfer.keep_head is True
    assert run.search is None
    assert spec.model_dump() == before  # nothing leaked into the input
    assert spec.model.params["block_widths"] == [24, 24]


def test_apply_params_fills_list_knobs_from_preset_defaults_and_same_as() -> None:
    spec = load_spec(SWEEPS / "resnet_widths.yaml")
    assert "block_widths" not in spec.model.params  # resnet_paper's (64, 32) is the base
    run = apply_params(spec, {"model.block_widths.1": 48})  # stem_widths.1 follows (same_as)
    assert run.model.params["block_widths"] == [64, 48]
    assert run.model.params["stem_widths"] == [64, 48]


def test_apply_params_rejects_bad_keys_and_values() -> None:
    spec = load_spec(SWEEPS / "vit_patch_depth.yaml")
    with pytest.raises(SpecError, match="model.patch_sise: unknown knob for vit"):
        apply_params(spec, {"model.patch_sise": 50})
    with pytest.raises(SpecError, match="patch_size=7 must divide"):
        apply_params(spec, {"model.patch_size": 7})
    with pytest.raises(SpecError, match="finetune.batch_size: Input should be a valid integer"):
        apply_params(spec, {"finetune.batch_size": 32.0})


def test_spec_is_frozen() -> None:
    spec = load_spec(SWEEPS / "smoke.yaml")
    with pytest.raises(Exception, match="frozen"):
        spec.seed = 3  # type: ignore[misc]
    assert isinstance(spec, Spec)


def test_stage_settings_are_train_config_s_fields_and_bounds() -> None:
    """StageSpec is made from TrainConfig: the same fields, defaults and bounds, less the spec's seed."""
    defaults = TrainConfig()
    assert list(StageSpec.model_fields) == [f for f in vars(defaults) if f != "seed"]
    stage = StageSpec(epochs=defaults.epochs)
    assert stage.train_config(seed=defaults.seed) == defaults
    for field, bad in {"batch_size": 0, "lr": 0.0, "warmup_fraction": 1.0, "schedule": "step"}.items():
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: bad})
        with pytest.raises(ValueError, match=field):
            StageSpec(epochs=1, **{field: bad})


def test_spec_modules_import_only_the_ones_before_them() -> None:
    """schema < errors < space < configs < load: no module of the spec imports one after it."""
    order = ["schema", "errors", "space", "configs", "load"]
    package = Path(__file__).resolve().parents[1] / "ecgtune" / "spec"
    for i, name in enumerate(order):
        tree = ast.parse((package / f"{name}.py").read_text())
        imported = {
            node.module.rsplit(".", 1)[1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ecgtune.spec.")
        }
        assert imported <= set(order[:i]), (name, imported)

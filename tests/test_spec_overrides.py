"""`--set KEY=VALUE`: one setting of a spec changed for one run, checked exactly as the file is."""

from __future__ import annotations

import pytest

from ecgtune import cli
from ecgtune.shipped import SWEEPS_DIR
from ecgtune.spec import SpecError, load_spec
from ecgtune.spec.load import apply_overrides

SMOKE = SWEEPS_DIR / "smoke.yaml"


def test_overrides_set_dotted_keys_to_yaml_values_and_leave_the_file_alone() -> None:
    before = SMOKE.read_text()
    spec = load_spec(
        SMOKE,
        [
            "search.num_samples=2",
            "stages.finetune.epochs=4",
            "stages.finetune.lr=1e-4",  # read as the file reads it: a float, not the string "1e-4"
            "model.params.stem_widths.1=32",  # element 1 of a list
            "model.params.block_widths=[16, 32]",
            "search.space.model.block_kernel.choices=[9, 25]",  # a search-space key holds dots
            "data.pretrain=",  # empty: null, i.e. no pretraining stage
            "search.backbones=",  # without pretraining there is no backbone to share
            "run.storage_path=/tmp/elsewhere",
        ],
    )
    assert spec.search.num_samples == 2 and spec.stages.finetune.epochs == 4
    assert spec.stages.finetune.lr == 1e-4 and isinstance(spec.stages.finetune.lr, float)
    assert spec.model.params["stem_widths"] == [16, 32] and spec.model.params["block_widths"] == [16, 32]
    assert spec.search.space["model.block_kernel"].choices == [9, 25]
    assert spec.data.pretrain is None and spec.run.storage_path == "/tmp/elsewhere"
    assert load_spec(SMOKE) == load_spec(SMOKE, [])  # nothing else changed, and the file is untouched
    assert SMOKE.read_text() == before
    # Applied in order, to a copy; a section the file leaves out is filled in.
    data = {"name": "x"}
    assert apply_overrides(data, ["a.b=1", "a.b=2", "c=[1, 2]"]) == {"name": "x", "a": {"b": 2}, "c": [1, 2]}
    assert data == {"name": "x"}


@pytest.mark.parametrize(
    ("override", "says"),
    [
        # Through the spec's own checks, naming the key as a typo in the file would be named.
        ("search.num_sample=1", "unknown key 'num_sample' in search; allowed: space, num_samples"),
        ("stages.finetune.epohcs=1", "unknown key 'epohcs' in stages.finetune"),
        ("serach.num_samples=1", "unknown key 'serach' at top level"),
        ("search.num_samples=0", "search.num_samples: Input should be greater than or equal to 1 (got 0)"),
        ("stages.finetune.lr=fast", "stages.finetune.lr: "),
        # The path itself, before any check.
        ("name.x=1", "--set name.x=1: name is 'smoke', not a mapping or list"),
        ("model.params.stem_widths.5=8", "model.params.stem_widths is a list of 2; '5' is not an index"),
        ("search.num_samples", "--set search.num_samples: expected KEY=VALUE"),
        ("search..num_samples=1", "--set search..num_samples=1: expected KEY=VALUE"),
        ("search.num_samples=[1", "--set search.num_samples=[1: not valid YAML"),
    ],
)
def test_a_bad_override_is_one_line_naming_it(override: str, says: str, tmp_path, monkeypatch, capsys):
    with pytest.raises(SpecError, match="smoke.yaml") as info:
        load_spec(SMOKE, [override])
    assert len(info.value.problems) == 1 and says in info.value.problems[0], info.value.problems
    assert override in str(info.value)  # in the line itself, or in the source the line starts with
    monkeypatch.chdir(tmp_path)
    for verb in ("validate", "sweep"):
        assert cli.main([verb, "smoke", "--set", "search.num_samples=2", "--set", override]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"ecgtune {verb}: error: ") and says in err[0], err


def test_the_sweep_command_hands_the_overrides_to_the_driver(tmp_path, monkeypatch, capsys) -> None:
    """Checked before any data is built or Ray starts, then handed to the driver, which loads the spec
    with them (and writes it, as run, to the experiment: tests/test_shipped.py runs one)."""
    import ecgtune.data.demo
    import ecgtune.search

    monkeypatch.chdir(tmp_path)
    # Stores given by path: the smoke sweep's demo stores are not built.
    monkeypatch.setattr(ecgtune.data.demo, "build_demo", lambda *a, **k: pytest.fail("built demo data"))
    ran = []

    def run_sweep(path, **kwargs):
        ran.append(load_spec(path, kwargs["overrides"]))
        raise ValueError("stop here")

    monkeypatch.setattr(ecgtune.search, "run_sweep", run_sweep)
    store = f"{{path: {tmp_path}}}"
    overrides = ["search.num_samples=1", f"data.pretrain={store}", f"data.finetune={store}"]
    assert cli.main(["sweep", "smoke", *[arg for o in overrides for arg in ("--set", o)]]) == 2
    assert "stop here" in capsys.readouterr().err
    assert ran[0].search.num_samples == 1 and ran[0].data.finetune.path == str(tmp_path)

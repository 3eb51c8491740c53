"""The Optuna sampler of a spec's search space (`ecgtune.sampler`): relations held, canonical keys,
picklable. Plain Optuna studies, no Ray."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import optuna
import pytest
import yaml
from optuna.samplers import TPESampler

from ecgtune.sampler import fixed_values, make_sampler, sample_params, trial_params
from ecgtune.shipped import SWEEPS_DIR
from ecgtune.spec import apply_params, load_spec, spec_from_dict

SWEEPS = SWEEPS_DIR


def raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_sample_params_keeps_heads_dividing_embed_dim() -> None:
    spec = load_spec(SWEEPS / "vit_patch_depth.yaml")
    study = optuna.create_study(sampler=TPESampler(seed=0, n_startup_trials=5))
    sampler = make_sampler(spec)
    seen_dims = set()
    for _ in range(30):
        trial = study.ask()
        params = sampler(trial)
        assert set(params) == set(spec.search.space)  # canonical names only
        assert params["model.embed_dim"] % params["model.num_heads"] == 0
        # Optuna saw a fixed distribution per embed dim, under its own name.
        assert f"model.num_heads|model.embed_dim={params['model.embed_dim']}" in trial.params
        seen_dims.add(params["model.embed_dim"])
        study.tell(trial, params["model.depth"] * params["model.dropout"])
    assert len(seen_dims) >= 3
    assert apply_params(spec, params).model.params["num_heads"] == params["model.num_heads"]


def test_sample_params_copies_same_as() -> None:
    spec = load_spec(SWEEPS / "smoke.yaml")
    study = optuna.create_study(sampler=TPESampler(seed=0, n_startup_trials=3))
    for _ in range(30):
        trial = study.ask()
        params = sample_params(trial, spec.search.space)
        assert params["model.stem_widths.1"] == params["model.block_widths.1"]
        assert "model.stem_widths.1" not in trial.params  # copied, not sampled
        assert 8 <= params["model.block_widths.0"] <= 32
        study.tell(trial, params["finetune.lr"])


def test_relations_to_fixed_params_use_fixed_values() -> None:
    d = raw("vit_patch_depth")
    d["model"]["params"]["embed_dim"] = 96
    del d["search"]["space"]["model.embed_dim"]
    d["search"]["space"]["model.depth"] = {"type": "same_as", "same_as": "model.num_heads"}
    spec = spec_from_dict(d)
    assert fixed_values(spec) == {"model.embed_dim": 96}
    study = optuna.create_study(sampler=TPESampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        params = make_sampler(spec)(trial)
        assert 96 % params["model.num_heads"] == 0 and params["model.depth"] == params["model.num_heads"]
        assert "model.num_heads" in trial.params  # fixed parent: one plain name suffices
        study.tell(trial, 0.0)
    with pytest.raises(ValueError, match="fixed=fixed_values"):
        sample_params(study.ask(), spec.search.space)


def test_sampler_pickles_and_trial_params_picks_canonical_keys() -> None:
    """Ray pickles the searcher with its space function, and its config mixes Optuna's names in."""
    spec = load_spec(SWEEPS / "vit_patch_depth.yaml")
    sampler = pickle.loads(pickle.dumps(make_sampler(spec)))
    trial = optuna.create_study(sampler=TPESampler(seed=1)).ask()
    params = sampler(trial)
    config = {**trial.params, **params}
    assert trial_params(spec.search.space, config) == params


def test_a_searcher_saved_before_the_sampler_moved_still_restores() -> None:
    """Tune pickles the searcher with `make_sampler`'s partial: older experiments name the function
    `ecgtune.spec.sample_params`, which must still resolve (to the one in ecgtune.sampler)."""
    assert pickle.loads(b"cecgtune.spec\nsample_params\n.") is sample_params


def test_the_spec_imports_neither_optuna_nor_ray() -> None:
    code = "import sys, ecgtune.spec; sys.exit(sorted({'optuna', 'ray'} & set(sys.modules)) or 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

"""The tabular blackbox (bench/blackbox.py) of the search benchmark's held-out check: a configuration
gets the recorded curve of its nearest recorded row. With backbone sharing, trials that share a backbone
(the same model.* and pretrain.* values) are charged one pretraining, so "tabular-by-backbone" must give
them rows of one recorded backbone, whatever their fine-tuning settings."""

from __future__ import annotations

import numpy as np

from bench.blackbox import TabularBlackbox
from bench.curve_table import TABLE_FILE, CurveTable, backbone_keys, load_space_spec
from bench.unit_cube import cube_keys, decode


def test_trials_that_share_a_backbone_replay_one_recorded_backbone():
    rows = CurveTable(TABLE_FILE).main_rows()
    plain, by_backbone = TabularBlackbox(rows), TabularBlackbox(rows, by_backbone=True)
    for row in plain.rows[::7]:  # a recorded configuration is its own nearest, either way
        assert plain.nearest(row["config"])["id"] == by_backbone.nearest(row["config"])["id"] == row["id"]
    space = load_space_spec().search.space
    keys, shared = cube_keys(space), backbone_keys(space)
    rng = np.random.default_rng(0)
    split, alone = 0, {}
    for _ in range(40):  # a sampled backbone, fine-tuned with 3 sampled settings
        backbone = {k: v for k, v in decode(space, keys, rng.random(len(keys))).items() if k in shared}
        trials = [{**decode(space, keys, rng.random(len(keys))), **backbone} for _ in range(3)]
        got = [by_backbone.nearest(c) for c in trials]
        assert len({r["backbone"] for r in got}) == 1, [r["id"] for r in got]
        for config, row in zip(trials, got, strict=True):  # of that backbone's rows, the nearest fine-tuning
            b = row["backbone"]
            alone.setdefault(b, TabularBlackbox([r for r in rows if r["backbone"] == b]))
            assert row["id"] == alone[b].nearest(config)["id"]
        split += len({plain.nearest(c)["backbone"] for c in trials}) > 1
    assert split > 0, "nearest over all coordinates kept every shared backbone together: nothing was checked"

"""`python -m bench.surrogate split`: the held-out check of the search benchmark replays strategies on
held-out rows twice, with their recorded curves and with the curves a surrogate fitted on the other rows
predicts. That check means something only if the held-out rows are whole backbones (every fine-tuning
setting of a pretraining, since those share most of their curve), the folds partition the table, and the
predicting surrogate never saw a held-out row."""

from __future__ import annotations

import gzip
import json

import pytest

from bench import heldout_rankings, surrogate
from bench.curve_table import TABLE_FILE, CurveTable

pytestmark = pytest.mark.slow


def _rows(path):
    with gzip.open(path, "rt") as f:
        return json.load(f)["rows"]


def test_two_folds_hold_out_complementary_whole_backbones_predicted_without_them(tmp_path, monkeypatch):
    monkeypatch.setattr(surrogate, "CACHE_DIR", tmp_path / "cache")  # not the user's cache
    # The committed recipe names a GP (a minute to fit on 2 cores); split must use whichever the recipe
    # names, so name one fitted in a blink.
    recipe = {**json.loads(surrogate.SURROGATE_FILE.read_text()), "model": "knn"}
    (tmp_path / "surrogate.json").write_text(json.dumps(recipe))
    monkeypatch.setattr(surrogate, "SURROGATE_FILE", tmp_path / "surrogate.json")
    table = CurveTable(TABLE_FILE)
    rows = table.main_rows()
    held_ids = []
    for fold in (0, 1):
        paths = surrogate.split(table, tmp_path / f"f{fold}", folds=2, fold=fold)
        train, held, predicted = (_rows(p) for p in paths)
        assert sorted(r["id"] for r in train + held) == sorted(r["id"] for r in rows)
        assert not {r["backbone"] for r in train} & {r["backbone"] for r in held}
        assert abs(len(held) - len(rows) / 2) <= 5  # half the backbones, 5 fine-tunings each
        held_ids.append({r["id"] for r in held})
        # The held-out rows again, each curve the prediction of a surrogate fitted on the training rows only.
        usable = surrogate.usable(held)
        assert [(r["id"], r["config"]) for r in predicted] == [(r["id"], r["config"]) for r in usable]
        fitted = surrogate.Surrogate(train, recipe["model"], recipe["seed"])
        some = predicted[:: max(1, len(predicted) // 8)]
        for r in some:
            assert r["epochs"] == fitted.curve(r["config"])  # exact: JSON keeps a float's every bit
        recorded = {r["id"]: r["epochs"][-1]["objective"] for r in usable}
        assert any(r["epochs"][-1]["objective"] != pytest.approx(recorded[r["id"]]) for r in some)
    assert not held_ids[0] & held_ids[1] and held_ids[0] | held_ids[1] == {r["id"] for r in rows}


def test_a_folder_keeps_its_split(tmp_path, monkeypatch):
    """Earlier replays ran on a folder's tables: writing the same split again is harmless (it is
    deterministic), another split or a folder of unknown tables is refused before anything is written."""
    recipe = {**json.loads(surrogate.SURROGATE_FILE.read_text()), "model": "knn"}
    (tmp_path / "surrogate.json").write_text(json.dumps(recipe))
    monkeypatch.setattr(surrogate, "SURROGATE_FILE", tmp_path / "surrogate.json")
    monkeypatch.setattr(surrogate, "CACHE_DIR", tmp_path / "cache")
    table = CurveTable(TABLE_FILE)
    out = tmp_path / "split"
    surrogate.split(table, out, folds=2, fold=0)
    before = {p.name: _rows(p) for p in out.glob("*.json.gz")}
    surrogate.split(table, out, folds=2, fold=0)
    with pytest.raises(ValueError, match=r"split: holds another split .* pass another --out"):
        surrogate.split(table, out, folds=2, fold=1)
    assert {p.name: _rows(p) for p in out.glob("*.json.gz")} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "heldout.json.gz").write_bytes(b"a user's table")
    with pytest.raises(ValueError, match=r"mine: holds heldout.json.gz but no split.json"):
        surrogate.split(table, mine, folds=2, fold=0)
    assert (mine / "heldout.json.gz").read_bytes() == b"a user's table"
    # Folds that hold out everything, or a fold outside them, are refused before a folder is made.
    refused = ((1, 0, r"--folds 1: expected 2 or more"), (2, 2, r"--fold 2: expected 0 to 1"))
    for folds, fold, expected in refused:
        with pytest.raises(ValueError, match=expected):
            surrogate.split(table, tmp_path / f"none{folds}{fold}", folds=folds, fold=fold)
        assert not (tmp_path / f"none{folds}{fold}").exists()


def test_rankings_pool_two_folds_each_run_on_its_own_full_trial_seconds(tmp_path, monkeypatch):
    """`rankings --tags a+b c+d`: each strategy's runs of both tags together. A run's best-so-far is read
    on its own fold's full-trial seconds: two folds whose runs are the same in FTE, though not in seconds,
    pool to what each gives alone."""
    from bench import replay_analysis

    monkeypatch.setattr(replay_analysis, "RESULTS_DIR", tmp_path)

    def write(name, tag, fte_seconds, first):  # 2.0 at 0.5 FTE, then 1.0 from `first` FTE on
        runs = [{"strategy": name, "fte_seconds": fte_seconds,
                 "best_steps": [[0.5 * fte_seconds, 2.0], [(first + k / 100) * fte_seconds, 1.0]]}
                for k in range(8)]  # fmt: skip
        (tmp_path / f"{name}@4fte-{tag}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))

    for side in ("p", "r"):
        for fold, fte_seconds in ((0, 10.0), (1, 1000.0)):
            write("fast", f"{side}{fold}", fte_seconds, 1)
            write("slow", f"{side}{fold}", fte_seconds, 3)
    alone = heldout_rankings.rankings(("p0", "r0"), budget_fte=4)
    pooled = heldout_rankings.rankings(("p0+p1", "r0+r1"), budget_fte=4)
    assert pooled["seeds"] == {"p0+p1": {"fast": 16, "slow": 16}, "r0+r1": {"fast": 16, "slow": 16}}
    assert alone["auc"]["p0"]["fast"] < alone["auc"]["p0"]["slow"]
    for measure in ("final", "auc"):
        assert pooled[measure]["p0+p1"] == pytest.approx(alone[measure]["p0"])
        assert pooled[measure]["r0+r1"] == pytest.approx(alone[measure]["r0"])

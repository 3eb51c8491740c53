"""ecgtune's dashboard series without a cluster: the gauges, the Grafana board and the READMEs name the
same series (`ecgtune.metrics` is the source), and the values the gauges hold.

Fast and without Ray: the gauges are built against a recording stand-in for `ray.util.metrics.Gauge`.
The board against a real Prometheus: test_monitoring_prometheus.py.
"""

from __future__ import annotations

import ast
import re
from types import SimpleNamespace
from typing import Any

import pytest
from grafana_board import REPO, SERIES_RE, labels_in, load_board, panel_queries, variable_queries, variables

from ecgtune import metrics

CODE = sorted((REPO / "ecgtune").rglob("*.py"))
METRIC_CLASSES = {"Gauge", "Counter", "Histogram"}


class RecordingGauge:
    """Stands in for ray.util.metrics.Gauge: remembers how it was built and every value set."""

    made: list[RecordingGauge] = []

    def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] | None = None):
        self.name, self.description, self.tag_keys = name, description, tuple(tag_keys or ())
        self.values: list[tuple[float, dict[str, str]]] = []
        RecordingGauge.made.append(self)

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert set(tags or {}) == set(self.tag_keys), f"{self.name}: tags {tags} for keys {self.tag_keys}"
        self.values.append((value, dict(tags or {})))


@pytest.fixture
def recorded(monkeypatch) -> list[RecordingGauge]:
    import ecgtune.sweep_callbacks

    RecordingGauge.made = []
    monkeypatch.setattr(ecgtune.sweep_callbacks, "Gauge", RecordingGauge)
    return RecordingGauge.made


def _epoch(stage: str, epoch: int, objective: float) -> dict[str, Any]:
    return {"stage": stage, "epoch": epoch, "objective": objective, "ptbxl_val_mae_hr": 9.0}


def _publish_everything() -> dict[str, RecordingGauge]:
    from ecgtune.sweep_callbacks import SweepGauges

    sweep = SweepGauges("s")
    t1 = SimpleNamespace(trial_id="t1", last_result={})
    sweep.on_trial_start(0, [], t1)
    # The first epoch is a zero-shot read-out: better than anything fine-tuned.
    sweep.on_trial_result(0, [], t1, {**_epoch("pretrain", 1, 0.5), "backbone": "reused"})
    sweep.on_trial_result(0, [], t1, _epoch("finetune", 2, 1.5))
    sweep.on_trial_result(0, [], t1, _epoch("finetune", 3, 1.2))
    sweep.on_trial_complete(0, [], t1)
    sweep.on_experiment_end([])
    return {g.name: g for g in RecordingGauge.made}


def test_every_gauge_the_code_builds_is_an_ecgtune_metrics_series(recorded):
    made = _publish_everything()
    by_name = {s.name: s for s in metrics.SERIES}
    assert set(made) == set(by_name), "a gauge without an ecgtune.metrics entry, or an entry nothing builds"
    for name, gauge in made.items():
        assert gauge.tag_keys == by_name[name].labels and gauge.description == by_name[name].description


def test_no_gauge_name_is_typed_outside_ecgtune_metrics():
    for path in CODE:
        for call in ast.walk(ast.parse(path.read_text())):
            if not isinstance(call, ast.Call):
                continue
            callee = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
            if callee in METRIC_CLASSES and call.args and isinstance(call.args[0], ast.Constant):
                raise AssertionError(
                    f"{path.relative_to(REPO)}:{call.lineno}: {callee}({call.args[0].value!r}) names a "
                    "series outside ecgtune.metrics"
                )
        if path.name != "metrics.py":
            stray = set(re.findall(r"[\"'](ecgtune_(?:trial|sweep)_[a-z_]+)[\"']", path.read_text()))
            assert not stray, f"{path.relative_to(REPO)}: series names typed here: {sorted(stray)}"


def test_best_objective_series_carries_fine_tuning_epochs_only(recorded):
    made = _publish_everything()
    finetune = made[metrics.TRIAL_FINETUNE_OBJECTIVE.name].values
    assert [v for v, _ in finetune] == [1.5, 1.2]  # the 0.5 of pretraining never reaches it
    assert [v for v, _ in made[metrics.TRIAL_OBJECTIVE.name].values] == [0.5, 1.5, 1.2]
    assert [v for v, _ in made[metrics.TRIAL_STAGE.name].values] == [0, 1, 1]
    board = load_board()
    (best,) = [q for q in panel_queries(board) if "best" in q.where.lower()]
    assert best.series == {metrics.TRIAL_FINETUNE_OBJECTIVE.prometheus_name}, best.expr
    assert "fine-tuning" in best.where


def test_grafana_board_queries_only_ecgtune_series_and_their_labels():
    board = load_board()
    known = metrics.BY_PROMETHEUS_NAME
    v = variables(board)
    assert v["datasource"]["type"] == "datasource" and v["datasource"]["query"] == "prometheus"
    queries = variable_queries(board) + panel_queries(board)
    used: set[str] = set()
    for q in queries:
        assert q.series, f"{q.where}: no ray_ series in {q.expr!r}"
        unknown = q.series - set(known)
        assert not unknown, f"{q.where}: {sorted(unknown)} not in ecgtune.metrics ({sorted(known)})"
        labels = set().union(*(known[n].labels for n in q.series))
        stray = labels_in(q.expr) - labels
        assert not stray, f"{q.where}: labels {sorted(stray)} are not labels of {sorted(q.series)}"
        # What the legend shows must survive the query: a label the series has, kept by any `by (...)`.
        kept = labels if q.by_labels is None else q.by_labels
        assert q.legend_labels <= kept, f"{q.where}: legend {q.legend!r} uses labels not in the result {kept}"
        used |= q.series
    for s in metrics.SERIES:
        if s.off_board is None:
            assert s.prometheus_name in used, f"{s.prometheus_name} has no panel and no off_board reason"
        else:
            assert s.prometheus_name not in used, f"{s.prometheus_name} is on the board but marked off_board"
    for p in board["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else None]


def test_readmes_name_the_series_the_code_publishes():
    known = set(metrics.BY_PROMETHEUS_NAME)
    readme = (REPO / "README.md").read_text()
    monitoring = _section(readme, "## Monitoring")
    named = set(SERIES_RE.findall(monitoring))
    assert named == known, f"README monitoring section: missing {known - named}, unknown {named - known}"
    for doc in (REPO / "README.md", REPO / "cluster" / "README.md"):
        stray = set(re.findall(r"\bray_ecgtune_[a-z_]+", doc.read_text())) - known
        assert not stray, f"{doc.relative_to(REPO)} names series ecgtune does not publish: {sorted(stray)}"
    for s in metrics.SERIES:  # the labels too, as the README writes them: name{label,...}
        assert f"{s.prometheus_name}" in monitoring and all(label in monitoring for label in s.labels)


def test_gauges_keep_their_latest_values_until_the_trial_ends(recorded):
    """Ray exports a gauge only in a report interval in which it was set; the keeper re-sets the latest
    values (one per label set) so a trial's series does not vanish between epochs minutes apart, and
    stops re-setting a trial's once Tune ends that trial."""
    from ecgtune.metrics import _KEEPER
    from ecgtune.sweep_callbacks import SweepGauges

    sweep = SweepGauges("s")
    t1, t2 = (SimpleNamespace(trial_id=t, last_result={}) for t in ("t1", "t2"))
    sweep.on_trial_start(0, [], t1)
    sweep.on_trial_result(0, [], t1, _epoch("pretrain", 1, 0.5))
    sweep.on_trial_result(0, [], t1, _epoch("finetune", 2, 1.5))
    sweep.on_trial_start(0, [], t2)
    sweep.on_trial_result(0, [], t2, _epoch("pretrain", 1, 0.7))
    (epoch,) = [g for g in recorded if g.name == metrics.TRIAL_EPOCH.name]
    del epoch.values[:]
    _KEEPER.refresh()
    assert sorted(epoch.values, key=str) == [  # the latest value of each trial only, again
        (1, {"sweep": "s", "trial": "t2"}),
        (2, {"sweep": "s", "trial": "t1"}),
    ]
    sweep.on_trial_complete(0, [], t1)  # t1 ended: its values are no longer kept, t2's are
    del epoch.values[:]
    _KEEPER.refresh()
    assert epoch.values == [(1, {"sweep": "s", "trial": "t2"})]
    sweep.on_experiment_end([])
    del epoch.values[:]
    _KEEPER.refresh()
    assert epoch.values == []


def test_a_result_that_is_not_a_trials_epoch_is_skipped_not_raised(recorded):
    """A callback that raises ends the sweep; a result without ecgtune's epoch keys only shows nothing."""
    from ecgtune.sweep_callbacks import SweepGauges

    sweep = SweepGauges("s")
    sweep.on_trial_result(0, [], SimpleNamespace(trial_id="t1"), {"training_iteration": 1})
    assert all(g.values == [] for g in recorded)
    sweep.on_experiment_end([])


def test_sweep_gauges_survive_tunes_pickling_and_count_states(recorded):
    import pickle

    from ecgtune.sweep_callbacks import SweepGauges

    sweep = SweepGauges("s")
    sweep.on_trial_start(0, [], None)
    restored = pickle.loads(pickle.dumps(sweep))  # Tune stores its callbacks in the experiment state
    assert restored.gauge is None and restored.counts["running"] == 1
    from types import SimpleNamespace

    from ecgtune.experiment import STATUSES

    restored.on_trial_error(0, [], SimpleNamespace(last_result={}))
    values = {tags["state"]: v for v, tags in recorded[-1].values[-len(STATUSES) :]}
    assert values["running"] == 0 and values["error"] == 1 and values["diverged"] == 0
    sweep.on_experiment_end([])
    restored.on_experiment_end([])

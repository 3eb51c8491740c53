"""The Grafana board against a real Prometheus, scraping a `ray start --head` cluster while a sweep runs.

As users run it: Debian's `prometheus` binary, configured from the Prometheus config Ray generates in
its session directory (whose file_sd entry is the service-discovery file Ray's dashboard keeps current),
with only the intervals shortened. A sweep runs as a driver on that head; then every query of
cluster/grafana/ecgtune-dashboard.json is executed through Prometheus' HTTP API as Grafana would
(instant panels with /api/v1/query at the end of the time range, time-series panels with
/api/v1/query_range over it, `$__range` = the range, `$sweep` = the sweep, `$trial` = all,
repeated panels once per `$target`) and must return the series it promises, with its legend's labels.

Everything listens on 127.0.0.1; the head and Prometheus started here are stopped by their own
process ids, never `ray stop`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from grafana_board import load_board, panel_queries, substitute, variable_queries
from test_sweep import stores, write_spec  # noqa: F401  (fixture reused)

from bench.ray_head import free_port, start_head, stop_head
from ecgtune.experiment import STATUSES
from ecgtune.metrics import STAGE_VALUES

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.cluster,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the `prometheus` binary is not installed (Debian/Ubuntu: apt-get install -y prometheus; "
        ".ci/run installs it)",
    ),
]

# Workers hand their gauges to the node's metrics agent every metrics_report_interval_ms (10 s by
# default): an epoch of these tiny trials lasts about a second, so the test exports every second.
# Users' epochs last minutes; the README says what a shorter-lived value does.
REPORT_INTERVAL_ENV = {"RAY_metrics_report_interval_ms": "1000"}
SD_FILE = "prom_metrics_service_discovery.json"


def _wait_for(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def head():
    head = start_head(extra_env=REPORT_INTERVAL_ENV)
    try:
        yield head
    finally:
        stop_head(head)


def _prometheus_config(session: Path, out: Path) -> Path:
    """Ray's own generated config, intervals shortened: it scrapes what Ray's service-discovery file lists."""
    ray_config = session / "metrics" / "prometheus" / "prometheus.yml"  # written once the dashboard is up
    generated = yaml.safe_load(
        _wait_for(str(ray_config), lambda: ray_config.is_file() and ray_config.read_text(), 60)
    )
    (job,) = generated["scrape_configs"]
    (sd_file,) = job["file_sd_configs"][0]["files"]
    # Ray 2.60 writes the file into the session directory (and links it from the temp dir's root).
    assert Path(sd_file) == session / SD_FILE, sd_file
    targets = json.loads(
        _wait_for(f"{sd_file}", lambda: Path(sd_file).is_file() and Path(sd_file).read_text(), 60)
    )
    assert targets and all(a.startswith("127.0.0.1:") for t in targets for a in t["targets"]), targets
    generated["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
    job["file_sd_configs"][0]["refresh_interval"] = "2s"
    out.write_text(yaml.safe_dump(generated))
    return out


@pytest.fixture
def prometheus(head, tmp_path):
    session = Path(os.path.realpath(head.temp / "session_latest"))
    config = _prometheus_config(session, tmp_path / "prometheus.yml")
    port = free_port()
    cmd = [
        PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for("Prometheus to be ready", lambda: _get(f"{url}/-/ready", raw=True), 30)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _get(url: str, raw: bool = False):
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None
    return body if raw else json.loads(body)


def _api(prom: str, path: str, **params) -> list:
    query = urllib.parse.urlencode(params, doseq=True)
    reply = _get(f"{prom}/api/v1/{path}?{query}")
    assert reply is not None and reply["status"] == "success", (path, params, reply)
    return reply["data"]["result"] if isinstance(reply["data"], dict) else reply["data"]


def _label_values(prom: str, expr: str, start: float, end: float) -> set[str]:
    """Grafana's label_values(metric{...}, label) through Prometheus' series API."""
    inner = expr[len("label_values(") : -1]
    selector, label = (part.strip() for part in inner.rsplit(",", 1))
    series = _api(prom, "series", **{"match[]": selector, "start": start, "end": end})
    return {s[label] for s in series if label in s}


def _trial_epochs(experiment: Path) -> dict[str, list[dict]]:
    """trial id -> its reported epochs (result.json), as the trial saw them."""
    out = {}
    for f in experiment.glob("*/result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def test_every_grafana_panel_returns_its_series_from_a_real_prometheus(head, prometheus, stores, tmp_path):  # noqa: F811
    prom = prometheus
    storage = tmp_path / "runs"
    spec_file = write_spec(tmp_path / "spec.yaml", stores, storage, num_samples=4, concurrent=2)
    board = load_board()
    queries = panel_queries(board)
    (by_state,) = [q for q in queries if q.instant and "state" in q.legend_labels]

    # The sweep's driver on the head, as `ecgtune sweep --address` (a submitted job's driver is the same).
    env = {**head.env, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ecgtune", "sweep", str(spec_file), "--address", head.gcs]
    start = time.time()
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Live: while trials run, the state panel counts them.
            def running_now():
                expr = substitute(
                    by_state.expr, {"sweep": "sweeptest"}, max(1, math.ceil(time.time() - start))
                )
                rows = _api(prom, "query", query=expr)
                return any(r["metric"].get("state") == "running" and float(r["value"][1]) >= 1 for r in rows)

            _wait_for("a running trial on the state panel", running_now, 120, every=1)
            assert driver.wait(timeout=240) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        finally:
            if driver.poll() is None:
                driver.kill()
    (summary_file,) = storage.glob("sweeptest-*/summary.json")
    summary = json.loads(summary_file.read_text())
    trials = {t["trial_id"]: t for t in summary["trials"]}
    epochs = _trial_epochs(summary_file.parent)
    assert len(trials) == 4 and set(epochs) == set(trials)
    states = {s: sum(t["status"] == s for t in trials.values()) for s in STATUSES if s != "running"}
    assert states["error"] == 0, summary

    time.sleep(3)  # the last scrape after the driver's exit
    end = time.time()
    range_s = math.ceil(end - start) + 5
    t0 = end - range_s

    # Template variables: the sweep, its trials, the four targets.
    found = {}
    for q in variable_queries(board):
        name = q.where.split()[-1]
        found[name] = _label_values(prom, substitute(q.expr, {"sweep": "sweeptest"}, range_s), t0, end)
    assert "sweeptest" in found["sweep"], found
    assert found["trial"] == set(trials), found
    assert found["target"] == {"hr", "pr", "qrs", "qt"}, found

    results, stamps = {}, {}
    for q in queries:
        targets = sorted(found["target"]) if q.repeat == "target" else [".*"]
        for target in targets:
            expr = substitute(q.expr, {"sweep": "sweeptest", "trial": ".*", "target": target}, range_s)
            if q.instant:
                rows = _api(prom, "query", query=expr, time=end)
                values = {json.dumps(r["metric"], sort_keys=True): [float(r["value"][1])] for r in rows}
            else:
                rows = _api(prom, "query_range", query=expr, start=t0, end=end, step=1)
                values = {
                    json.dumps(r["metric"], sort_keys=True): [float(v) for _, v in r["values"]] for r in rows
                }
            assert rows, f"{q.where} (target {target}): no series for {expr}"
            for r in rows:  # Grafana's legend {{label}} needs the label on every series
                assert q.legend_labels <= set(r["metric"]), (
                    f"{q.where}: {r['metric']} lacks {q.legend_labels}"
                )
            legend = next(iter(q.legend_labels), "")
            results[(q.where, target)] = {json.loads(k).get(legend, ""): v for k, v in values.items()}
            if not q.instant:
                stamps[(q.where, target)] = {r["metric"][legend]: [t for t, _ in r["values"]] for r in rows}

    for (where, target), series in results.items():  # shown with -s: what each panel returned
        shown = {k: (v[-1] if len(v) == 1 else f"{len(v)} points") for k, v in sorted(series.items())}
        print(f"{where}{'' if target == '.*' else ' [' + target + ']'}: {len(series)} series {shown}")

    def panel(title_part: str, target: str = ".*") -> dict[str, list[float]]:
        (key,) = [k for k in results if title_part in k[0] and k[1] == target]
        return results[key]

    # Trials by state: the final counts, read after the sweep (the driver's series has ended by then).
    final = {state: v[-1] for state, v in panel("Trials by state (latest").items()}
    assert final == {"running": 0, **states}, (final, states)
    assert set(panel("Trials by state over time")) == set(STATUSES)
    # Lines, not dots: a series stays on the export between the moments it is set (trial events for the
    # driver, epochs for a trial), so the time-series panels have no gaps while it lives.
    for where in ("Trials by state over time", "Objective per trial", "Stage per trial"):
        ((key, by_label),) = [(k, v) for k, v in stamps.items() if where in k[0]]
        gaps = {
            label: max(b - a for a, b in zip(ts, ts[1:], strict=False))
            for label, ts in by_label.items()
            if len(ts) > 1
        }
        assert gaps, f"{where}: no series with two points, so no gap was measured"
        assert all(g <= 3 for g in gaps.values()), (where, gaps)
    span = [ts[-1] - ts[0] for ts in stamps[next(k for k in stamps if "over time" in k[0])].values()]
    assert min(span) >= 0.6 * (summary["wall_seconds"] - 5), (span, summary["wall_seconds"])
    # Per-trial panels: one series per trial, every trial.
    assert set(panel("Objective per trial")) == set(trials)
    for target in ("hr", "pr", "qrs", "qt"):
        assert set(panel("Validation MAE", target)) == set(trials), target
    stage = panel("Stage per trial")
    assert set(stage) == set(trials)
    assert all(set(v) <= set(STAGE_VALUES.values()) and STAGE_VALUES["finetune"] in v for v in stage.values())
    # Backbone store: the searched num_blocks takes 3 values in 4 trials, so at least one trial reused a
    # backbone; the board's hits and misses are the summary's reused and pretrained trials.
    lookups = {result: v[-1] for result, v in panel("Backbone store").items()}
    backbones = summary["backbones"]
    assert backbones["reused"] >= 1, summary
    assert lookups == {"hit": backbones["reused"], "miss": backbones["pretrained"]}, (lookups, backbones)
    reached = {trial: v[0] for trial, v in panel("Epochs reached").items()}
    assert reached == {t: float(trials[t]["epochs"]) for t in trials}, (reached, trials)
    # Best objective: a fine-tuning value some trial reported, never a zero-shot one from pretraining.
    ((best,),) = panel("Best fine-tuning objective").values()
    finetune_values = [r["objective"] for rows in epochs.values() for r in rows if r["stage"] == "finetune"]
    pretrain_values = [r["objective"] for rows in epochs.values() for r in rows if r["stage"] == "pretrain"]
    print(f"best on the board {best}; fine-tuning min {min(finetune_values)}; pretraining {pretrain_values}")
    assert any(best == pytest.approx(v, rel=1e-6) for v in finetune_values), (best, finetune_values)
    assert best >= min(finetune_values) * (1 - 1e-6)

"""`ecgtune dashboard`: optuna-dashboard on a sweep's Optuna study, on 127.0.0.1 and read-only.

Fast tests use a study written with Optuna alone (no Ray). The slow ones watch a real sweep through the
command line, as a user would: `ecgtune sweep` starts, `ecgtune dashboard` is started on its experiment
as soon as study.json exists, the sweep is interrupted with SIGINT (Ctrl-C) once 3 trials have ended and
continued with `ecgtune sweep --resume`, while the same dashboard keeps serving. Its JSON API (the routes
of optuna_dashboard/_app.py) and what headless Chromium renders are compared with the sweep's
summary.json: every trial once, with its state (finished -> Complete, stopped by ASHA -> Pruned,
diverged -> Fail) and value.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from synthetic import write_trial_stores

from ecgtune.cli import main

ECGTUNE = [sys.executable, "-m", "ecgtune"]
URL_LINE = re.compile(
    r"optuna-dashboard for study (\S+): (http://127\.0\.0\.1:(\d+))/dashboard/studies/(\d+)"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What optuna-dashboard calls each verdict of ecgtune's (ecgtune.searchers.PruneAwareOptunaSearch tells
# Optuna COMPLETE, PRUNED, or FAIL for a diverged or errored trial).
DASHBOARD_STATE = {"finished": "Complete", "stopped": "Pruned", "diverged": "Fail", "error": "Fail"}
# optuna-dashboard caches a study's trials for 2 s (optuna_dashboard/_storage.py `get_trials`, studies
# under 100 trials): a request this long after a change sees it.
CACHE_S = 2.2
ABSURD_LR = 1e10  # diverges at the first epoch that uses it (tests/test_search_facts.py)
NUM_SAMPLES = 10


# ------------------------------------------------------------------------------------------ helpers


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def journal_storage(experiment: Path) -> optuna.storages.JournalStorage:
    journal = optuna.storages.journal.JournalFileBackend(str(experiment / "optuna.journal"))
    return optuna.storages.JournalStorage(journal)


def write_study(experiment: Path, name: str = "hand-made", rdb_url: str | None = None) -> None:
    """An experiment directory whose study.json names a study holding one trial in each state, in a
    journal file beside it (as a sweep keeps it by default) or in the database `rdb_url`."""
    experiment.mkdir(parents=True)
    where = rdb_url or str(experiment / "optuna.journal")
    storage = optuna.storages.get_storage(rdb_url) if rdb_url else journal_storage(experiment)
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
    lr = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)}
    for state in ("COMPLETE", "PRUNED", "FAIL"):
        trial = study.ask(lr)
        trial.report(2.0, 1)
        trial.report(1.5, 2)
        if state == "COMPLETE":
            study.tell(trial, 1.25)
        else:
            study.tell(trial, state=optuna.trial.TrialState[state])
    study.ask(lr)  # left RUNNING, as a sweep's trials are while they train
    (experiment / "study.json").write_text(json.dumps({"storage": where, "study": name}))


def _default_sigint() -> None:
    # A child inherits an ignored SIGINT (a test run started in the background), and Python then raises
    # no KeyboardInterrupt: restore the default so that the SIGINT below is the Ctrl-C it stands for.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_dashboard(experiment: Path) -> tuple[subprocess.Popen, re.Match]:
    """`ecgtune dashboard EXPERIMENT --port 0` and the URL line it printed."""
    board = subprocess.Popen(
        [*ECGTUNE, "dashboard", str(experiment), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    line = board.stdout.readline().strip()  # "" if it exited
    match = URL_LINE.fullmatch(line)
    if match is None:
        board.kill()
        pytest.fail(f"no URL line from ecgtune dashboard: {line!r} {board.communicate()[1][-2000:]}")
    return board, match


def stop_group(proc: subprocess.Popen) -> None:
    """Kill what is left of a process started in its own session (a driver's local Ray included)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ------------------------------------------------------------------------------ fast: no Ray, no sweep


def test_a_run_without_study_json_is_refused_in_one_line(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path) in err and "no study.json" in err


def test_a_journal_that_is_not_there_is_refused_and_not_created(tmp_path, capsys):
    journal = tmp_path / "elsewhere" / "optuna.journal"
    (tmp_path / "study.json").write_text(json.dumps({"storage": str(journal), "study": "s"}))
    assert main(["dashboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{journal}: no Optuna journal file" in err
    # Opening it would have made an empty journal (Optuna creates the file) and shown no study at all.
    assert not journal.exists() and not journal.parent.exists()


def test_a_study_the_journal_lacks_is_refused(tmp_path, capsys):
    write_study(tmp_path / "run")
    pointer = tmp_path / "run" / "study.json"
    pointer.write_text(json.dumps({**json.loads(pointer.read_text()), "study": "another"}))
    assert main(["dashboard", str(tmp_path / "run")]) == 2
    assert "holds no study 'another'" in capsys.readouterr().err


def test_serves_the_study_on_loopback_only_and_refuses_every_change(tmp_path):
    from ecgtune.study_dashboard import open_dashboard

    write_study(tmp_path / "run")
    with open_dashboard(tmp_path / "run", port=0).start() as board:
        assert board.server.server_address[0] == "127.0.0.1"
        assert board.url == f"http://127.0.0.1:{board.port}/dashboard/studies/{board.study_id}"
        studies = get_json(f"{board.base_url}/api/studies")["study_summaries"]
        assert [(s["study_id"], s["study_name"]) for s in studies] == [(board.study_id, "hand-made")]
        api = f"{board.base_url}/api/studies/{board.study_id}"
        trials = get_json(api)["trials"]
        assert [(t["state"], t.get("values")) for t in trials] == [
            ("Complete", [1.25]),
            ("Pruned", [1.5]),  # Optuna's value of a pruned trial: its last intermediate value
            ("Fail", None),
            ("Running", None),
        ]
        running = trials[-1]["trial_id"]
        changes = [
            ("DELETE", api, None),
            ("POST", f"{api}/rename", {"study_name": "renamed"}),
            ("POST", f"{board.base_url}/api/trials/{running}/tell", {"state": "Fail"}),
        ]
        for method, url, body in changes:
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url, data=data, method=method)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 405, (method, url)
    # The journal, read afresh (the dashboard's answers are cached for a while), is unchanged.
    storage = journal_storage(tmp_path / "run")
    (study,) = storage.get_all_studies()
    assert study.study_name == "hand-made"
    assert [t.state.name for t in storage.get_all_trials(study._study_id)] == [
        "COMPLETE", "PRUNED", "FAIL", "RUNNING"
    ]  # fmt: skip


def test_a_study_in_a_database_is_served_the_same(tmp_path):
    """`run.optuna_storage`: an RDB URL in place of the journal (SQLite here; PostgreSQL for a team)."""
    from ecgtune.study_dashboard import open_dashboard

    write_study(tmp_path / "run", rdb_url=f"sqlite:///{tmp_path / 'optuna.db'}")
    with open_dashboard(tmp_path / "run", port=0).start() as board:
        trials = get_json(f"{board.base_url}/api/studies/{board.study_id}")["trials"]
    assert [t["state"] for t in trials] == ["Complete", "Pruned", "Fail", "Running"]


def test_the_command_prints_the_url_and_ctrl_c_ends_it(tmp_path):
    write_study(tmp_path / "run")
    board, url = start_dashboard(tmp_path / "run")
    try:
        assert url.group(1) == "hand-made"
        assert len(get_json(f"{url.group(2)}/api/studies/{url.group(4)}")["trials"]) == 4
        board.send_signal(signal.SIGINT)
        assert board.wait(timeout=30) == 0
    finally:
        stop_group(board)


# ---------------------------------------------------------------- slow: a real sweep, watched throughout


def write_spec(path: Path, stores: Path, storage: Path) -> Path:
    """Tiny trials (tests/test_sweep.py's model and stores) whose fine-tuning learning rate is sensible
    or absurd: with ASHA on fine-tuning epochs, trials finish, are stopped at a rung, or diverge."""
    lr = {"type": "categorical", "choices": [1e-3, 3e-3, 1e-2, ABSURD_LR]}
    spec = {
        "name": "dashtest",
        "model": {"name": "resnet_tiny", "params": {"stem_widths": [8, 8], "block_widths": [8, 8]}},
        "targets": ["hr", "pr", "qrs", "qt"],
        "data": {"pretrain": {"path": str(stores / "deepfake")}, "finetune": {"path": str(stores / "ptbxl")}},
        "stages": {"pretrain": {"epochs": 1, "batch_size": 8}, "finetune": {"epochs": 3, "batch_size": 8}},
        "search": {
            "space": {"finetune.lr": lr, "model.num_blocks": {"type": "int", "low": 1, "high": 2}},
            "num_samples": NUM_SAMPLES,
            "max_concurrent_trials": 2,
            "searcher": {"seed": 0, "n_startup_trials": 4},
            "asha": {"grace_period": 1, "reduction_factor": 2},
        },
        "resources": {"cpu": 1, "gpu": 0},
        "run": {
            "storage_path": str(storage),
            "max_failures": 0,
            "checkpoints_kept": 1,
            "reuse_actors": True,  # ~0.5 s per trial instead of ~4 s (a fresh process imports torch)
        },
    }
    path.write_text(yaml.safe_dump(spec))
    return path


@dataclass
class WatchedSweep:
    experiment: Path
    study_name: str
    url: str  # the study's page
    api: str  # /api/studies/<id>
    seen_live: list[list[str]]  # trial states the dashboard showed while the first driver ran
    at_interrupt: list[dict[str, Any]]  # its trials once the interrupted driver had exited
    trials: list[dict[str, Any]]  # its trials after the resumed sweep
    detail: dict[str, Any]  # its whole /api/studies/<id> answer after the resumed sweep
    summary: dict[str, Any]


def journal_trials(experiment: Path) -> list[optuna.trial.FrozenTrial]:
    storage = journal_storage(experiment)
    (study,) = storage.get_all_studies()
    return storage.get_all_trials(study._study_id)


@pytest.fixture(scope="module")
def watched_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("watched")
    spec = write_spec(root / "spec.yaml", write_trial_stores(root / "stores"), root / "runs")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started: list[subprocess.Popen] = []
    try:
        with open(root / "sweep.log", "w") as log:
            driver = subprocess.Popen(
                [*ECGTUNE, "sweep", str(spec)], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        started.append(driver)
        deadline = time.time() + 180
        while not list((root / "runs").glob("dashtest-*/study.json")):
            if driver.poll() is not None or time.time() > deadline:
                pytest.fail(f"the sweep wrote no study.json: {(root / 'sweep.log').read_text()[-3000:]}")
            time.sleep(0.2)
        experiment = next((root / "runs").glob("dashtest-*"))
        board, url = start_dashboard(experiment)  # during the sweep, as soon as its study exists
        started.append(board)
        base, study_id = url.group(2), url.group(4)
        api = f"{base}/api/studies/{study_id}"

        # Interrupt once 3 trials have ended, counted in the journal itself (the dashboard's view lags by
        # its cache); meanwhile record what the dashboard shows.
        seen_live: list[list[str]] = []
        while sum(t.state.is_finished() for t in journal_trials(experiment)) < 3:
            if driver.poll() is not None or time.time() > deadline:
                pytest.fail(f"the sweep ended or stalled early: {(root / 'sweep.log').read_text()[-3000:]}")
            states = [t["state"] for t in get_json(api)["trials"]]
            if not seen_live or states != seen_live[-1]:
                seen_live.append(states)
            time.sleep(0.2)
        driver.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment's state and returns
        driver.wait(timeout=120)
        time.sleep(CACHE_S)
        at_interrupt = get_json(api)["trials"]

        resumed = subprocess.Popen(
            [*ECGTUNE, "sweep", str(spec), "--resume"], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        started.append(resumed)
        out = resumed.communicate(timeout=300)[0]
        assert resumed.returncode == 0, out[-3000:]
        time.sleep(CACHE_S)
        detail = get_json(api)
        yield WatchedSweep(
            experiment=experiment,
            study_name=url.group(1),
            url=url.group(0).rsplit(" ", 1)[-1],
            api=api,
            seen_live=seen_live,
            at_interrupt=at_interrupt,
            trials=detail["trials"],
            detail=detail,
            summary=json.loads((experiment / "summary.json").read_text()),
        )
    finally:
        for proc in reversed(started):
            stop_group(proc)


def expected_trials(summary: dict[str, Any]) -> Counter:
    """What the dashboard should list, from summary.json: (state, value, params) of every trial."""
    return Counter(
        (
            DASHBOARD_STATE[t["status"]],
            None if DASHBOARD_STATE[t["status"]] == "Fail" else round(t["objective"], 9),
            tuple(sorted((k, float(v)) for k, v in t["config"].items())),
        )
        for t in summary["trials"]
    )


def shown_trials(trials: list[dict[str, Any]]) -> Counter:
    return Counter(
        (
            t["state"],
            None if t.get("values") is None else round(t["values"][0], 9),
            tuple(sorted((p["name"], float(p["param_external_value"])) for p in t["params"])),
        )
        for t in trials
    )


@pytest.mark.slow
@pytest.mark.cluster
def test_the_dashboard_follows_a_sweep_through_ctrl_c_and_resume(watched_sweep):
    w = watched_sweep
    assert w.study_name == w.experiment.name  # the study is named after its experiment
    # While the first driver ran, the dashboard showed trials as they started (and some while running).
    assert w.seen_live and any("Running" in states for states in w.seen_live), w.seen_live
    # The interrupt left work for the resume: trials still running or never started.
    ended = [t for t in w.at_interrupt if t["state"] != "Running"]
    assert 3 <= len(ended) < NUM_SAMPLES, [t["state"] for t in w.at_interrupt]

    # After the resume, the same dashboard process shows every trial of summary.json once, with the state
    # and value the searcher told Optuna, and the journal holds nothing more.
    summary_trials = w.summary["trials"]
    assert len(summary_trials) == len(w.trials) == len(journal_trials(w.experiment)) == NUM_SAMPLES
    assert shown_trials(w.trials) == expected_trials(w.summary)
    states = Counter(t["state"] for t in w.trials)
    assert set(states) == {"Complete", "Pruned", "Fail"}, states  # each kind of ending is shown
    assert dict(states) == {k.capitalize(): v for k, v in w.summary["optuna_states"].items()}
    for t in w.trials:
        steps = {v["step"]: v["value"] for v in t["intermediate_values"]}
        if t["state"] == "Pruned":  # its value is the one ASHA stopped it on, at ASHA's rung
            assert steps and steps[max(steps)] == pytest.approx(t["values"][0])
        elif t["state"] == "Complete":
            assert sorted(steps) == [1, 2, 3] and steps[3] == pytest.approx(t["values"][0])
        else:  # diverged at its first fine-tuning epoch: nothing TPE or ASHA may rank
            assert not steps and "values" not in t
    # Trials interrupted while running were ended by the resumed searcher, in the same journal.
    interrupted = {t["number"] for t in w.at_interrupt if t["state"] == "Running"}
    assert all(t["state"] != "Running" for t in w.trials if t["number"] in interrupted)
    # Its best trial is the sweep's.
    (best,) = w.detail["best_trials"]
    assert best["values"][0] == pytest.approx(w.summary["best"]["objective"])


def chromium(url: str, profile: Path, *, screenshot: Path | None = None) -> str:
    """The DOM of `url` once headless Chromium has rendered it (and a screenshot, if asked for)."""
    profile.mkdir()
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1280,900",
        # Virtual time: the page's requests and plots complete before the DOM is read, however slow
        # the machine, and its "live update" polling does not hold Chromium open.
        "--virtual-time-budget=15000", "--dump-dom",
    ]  # fmt: skip
    if screenshot is not None:
        args.append(f"--screenshot={screenshot}")
    proc = subprocess.Popen(
        [*args, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        stop_group(proc)  # its renderer and zygote processes too
    assert proc.returncode == 0, err[-2000:]
    return out


def page_text(dom: str) -> str:
    """The DOM's visible text, one " | " between elements."""
    text = re.sub(r"<script.*?</script>|<style.*?</style>", "", dom, flags=re.S)
    return re.sub(r"(\s*\|\s*)+", " | ", re.sub(r"<[^>]+>", " | ", text))


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)
def test_chromium_shows_each_trials_state_and_value_and_the_plots(watched_sweep, tmp_path):
    from PIL import Image

    w = watched_sweep
    shot = tmp_path / "study.png"
    top = chromium(w.url, tmp_path / "profile-study", screenshot=shot)
    # The study's page: plots drawn (plotly's elements), the sweep's best trial named.
    assert top.count('class="js-plotly-plot"') >= 2, page_text(top)[:2000]
    text = page_text(top)
    (best,) = w.detail["best_trials"]
    assert f"{w.study_name} (id=" in text and "History" in text and "Intermediate values" in text
    assert f"Best Trial (number={best['number']}) | {best['values'][0]!r}" in text, text[:3000]
    image = Image.open(shot)
    assert image.format == "PNG" and image.size == (1280, 900)
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or ()) > 50  # drawn, not a blank page

    # The trial list with every trial's details open: each trial's state and value as the API gives them.
    numbers = ",".join(str(t["number"]) for t in w.trials)
    text = page_text(chromium(f"{w.url}/trials?numbers={numbers}", tmp_path / "profile-trials"))
    assert f"| {len(w.trials)} Trials |" in text, text[:2000]
    shown = dict(
        (int(n), (state, value))
        for n, state, value in re.findall(
            r"Trial (\d+) \(trial_id=\d+\) \| (\w+) \|.*? \| Value \| ([^|]+?) \|", text
        )
    )
    expected = {
        t["number"]: (t["state"], repr(t["values"][0]) if t.get("values") else "None") for t in w.trials
    }
    assert shown == expected

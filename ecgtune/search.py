"""The sweep driver: a validated Spec -> Ray Tune (Optuna TPE + ASHA) -> summary.json.

    ecgtune sweep smoke                        # local Ray, or the cluster under `ray job submit`
    ecgtune sweep smoke --resume               # continue the newest interrupted run of that spec

The searcher and the scheduler are `ecgtune.searchers`'; the trial (`ecgtune.trial`) receives a plain
config; the experiment directory's files and the status rule are `ecgtune.experiment`'s. The driver
writes spec.yaml there when the sweep starts and summary.json when it ends.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray._private import ray_constants, services
from ray.util.metrics import Gauge

from ecgtune.data.locate import require_store
from ecgtune.experiment import (
    BACKBONE_ORIGIN,
    EPOCH,
    MODE,
    OBJECTIVE,
    REUSED_EPOCH,
    STATUSES,
    sweep_summary,
    trial_status,
    trial_summary,
    write_spec,
    write_summary,
)
from ecgtune.metrics import LOOKUP_RESULTS, SWEEP_BACKBONE_LOOKUPS, SWEEP_TRIALS, KeptGauge
from ecgtune.searchers import (
    BackboneSharingSearch,
    DivergenceAwareASHA,
    PruneAwareOptunaSearch,
    make_scheduler,
    make_searcher,
    saved_searcher,
)
from ecgtune.spec import Spec, StoreSpec, load_spec
from ecgtune.stages import require_finetune_labels
from ecgtune.sweep_log import SweepLog
from ecgtune.targets import TARGETS, check_targets
from ecgtune.trial import metrics_report_interval_s, run_trial


def ended_status(trial: Any, max_epochs: int, errored: bool) -> str:
    """The status of a trial Tune has just completed or errored, by `ecgtune.experiment.trial_status`:
    the dashboard's gauges and the console's lines ask here, the summary asks the same rule."""
    return trial_status(trial.last_result, max_epochs=max_epochs, errored=errored)


class SweepGauges(tune.Callback):
    """Per-sweep trial counts for the Ray dashboard's metrics, one series per `STATUSES` entry.

    `max_epochs`: the sweep's planned epochs per trial, for a last result without `total_epochs`."""

    def __init__(self, sweep: str, max_epochs: int = 0):
        self.sweep = sweep
        self.max_epochs = max_epochs
        self.counts: Counter[str] = Counter()
        self.gauge: KeptGauge | None = None
        # Backbone store hits and misses, one per trial, from the first result that says which.
        self.lookups: Counter[str] = Counter()
        self._looked_up: set[str] = set()
        self.lookup_gauge: KeptGauge | None = None

    def _publish(self) -> None:
        if self.gauge is None:
            gauge = Gauge(SWEEP_TRIALS.name, SWEEP_TRIALS.description, SWEEP_TRIALS.labels)
            self.gauge = KeptGauge(gauge, metrics_report_interval_s())
        for state in STATUSES:
            self.gauge.set(self.counts[state], {"sweep": self.sweep, "state": state})

    def on_trial_start(self, iteration, trials, trial, **info):
        self.counts["running"] += 1
        self._publish()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        origin = result.get(BACKBONE_ORIGIN)
        if origin not in LOOKUP_RESULTS or trial.trial_id in self._looked_up:
            return
        self._looked_up.add(trial.trial_id)
        self.lookups[LOOKUP_RESULTS[origin]] += 1
        if self.lookup_gauge is None:
            s = SWEEP_BACKBONE_LOOKUPS
            self.lookup_gauge = KeptGauge(Gauge(s.name, s.description, s.labels), metrics_report_interval_s())
        for outcome in LOOKUP_RESULTS.values():
            self.lookup_gauge.set(self.lookups[outcome], {"sweep": self.sweep, "result": outcome})

    def _ended(self, status: str) -> None:
        self.counts["running"] -= 1
        self.counts[status] += 1
        self._publish()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(ended_status(trial, self.max_epochs, errored=False))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(ended_status(trial, self.max_epochs, errored=True))

    def on_experiment_end(self, trials, **info):
        # Stop re-setting the counts; the final ones still reach the metrics agent (measured: a driver
        # that exited 1 s after its last set, with the default 10 s report interval, had it exported).
        for gauge in (self.gauge, self.lookup_gauge):
            if gauge is not None:
                gauge.release()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state; the gauges are rebuilt on first use.
        return {**self.__dict__, "gauge": None, "lookup_gauge": None}


@dataclass
class SweepResult:
    experiment_path: str
    summary: dict[str, Any]


@dataclass
class Sweep:
    """A Tuner and the parts of it whose state a caller may read after `fit()` (Tune uses these objects)."""

    tuner: tune.Tuner
    searcher: PruneAwareOptunaSearch | None
    scheduler: DivergenceAwareASHA | None
    gauges: SweepGauges


def trial_name(trial: Any) -> str:
    # Tune's default name packs the whole (nested) spec into the directory name.
    return f"trial_{trial.trial_id}"


def resolve_data(spec: Spec) -> Spec:
    """Absolute store paths, so every trial reads the same files; a store that is not there fails the
    sweep before Ray starts, naming its path. Builds nothing: `ecgtune sweep` builds the demo stores
    before this (`ecgtune.data.demo.ensure_demo_data`)."""
    finetune = require_store(spec.data.finetune)
    require_finetune_labels(finetune, spec.targets)  # a target nobody labelled would score NaN: say so now
    data = spec.data.model_copy(
        update={
            "finetune": StoreSpec(path=str(finetune)),
            "pretrain": None
            if spec.data.pretrain is None
            else StoreSpec(path=str(require_store(spec.data.pretrain))),
        }
    )
    return spec.model_copy(update={"data": data})


def resolve_backbones(spec: Spec, storage: str) -> Spec:
    """The backbone store every trial of the sweep uses, as an absolute path or a URI: `run.backbones`,
    or by default `<storage>/backbones`, so that sweeps with one storage path share one store."""
    if not spec.run.reuse_backbones or not spec.pretrain_epochs:
        return spec
    path = spec.run.backbones or f"{storage.rstrip('/')}/backbones"
    if "://" not in path:
        path = str(Path(path).expanduser().resolve())
    return spec.model_copy(update={"run": spec.run.model_copy(update={"backbones": path})})


def _storage_path(spec: Spec, override: str | None) -> str:
    path = override or spec.run.storage_path
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _latest_experiment(storage: str, name: str) -> str:
    candidates = sorted(Path(storage).glob(f"{name}-*/tuner.pkl"))
    if not candidates:
        raise FileNotFoundError(f"no earlier run of sweep {name!r} under {storage} to resume")
    return str(candidates[-1].parent)


class ProgressLines(tune.Callback):
    """The console's view of a sweep: a line per trial epoch and per ended trial
    (`ecgtune.sweep_log.SweepLog`), in place of Tune's table of every trial every few seconds."""

    def __init__(self, spec: Spec):
        self.log = SweepLog(spec.targets)
        self.max_epochs = spec.total_epochs
        space = spec.search.space if spec.search else {}
        self.shown = ["variant", *(k for k, d in space.items() if d.type != "same_as")]  # not the copies

    def on_trial_result(self, iteration, trials, trial, result, **info):
        params = {k: trial.config[k] for k in self.shown if k in trial.config}
        self.log.result(trial.trial_id, params, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, errored=True, note="see the summary")

    def _ended(self, trial: Any, errored: bool, note: str = "") -> None:
        last = trial.last_result or {}
        status = ended_status(trial, self.max_epochs, errored)
        self.log.ended(trial.trial_id, status, last.get(EPOCH, 0), last.get(OBJECTIVE), note)


def build_tuner(
    spec: Spec,
    storage: str,
    experiment_name: str,
    trainable: Callable[[dict[str, Any]], None] = run_trial,
    stop: tune.Stopper | None = None,
    searcher_class: type[PruneAwareOptunaSearch] | None = None,
) -> Sweep:
    """The Tuner of a sweep. `trainable`, `stop` and `searcher_class` are for benchmarks: a replay of
    recorded learning curves in place of training (bench/replay.py), a stop at a budget of
    trial-epochs, and another searcher with the same constructor in place of ecgtune's."""
    search = spec.search
    trainable = _with_resources(trainable, spec)
    param_space: dict[str, Any] = {"spec": spec.model_dump(mode="json")}
    searcher = None
    num_samples = 1
    if spec.variants:
        # Fixed experiments (ecgtune/sweeps/paper.yaml): a grid over the named variants, no TPE.
        param_space["variant"] = tune.grid_search(list(spec.variants))
    elif search is not None:
        num_samples = search.num_samples
        searcher = make_searcher(spec, study_name=experiment_name, searcher_class=searcher_class)
    scheduler = make_scheduler(spec)
    gauges = SweepGauges(spec.name, spec.total_epochs)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE,
            mode=MODE,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=search.max_concurrent_trials if search else 1,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
            reuse_actors=spec.run.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=experiment_name,
            storage_path=storage,
            stop=stop,
            failure_config=tune.FailureConfig(max_failures=spec.run.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.run.checkpoints_kept),
            callbacks=[gauges, ProgressLines(spec)],
            verbose=0,  # ProgressLines is the console's view
        ),
    )
    return Sweep(tuner, searcher, scheduler, gauges)


def run_sweep(
    spec_path: str | Path,
    *,
    resume: str | None = None,
    storage_path: str | None = None,
    address: str | None = None,
) -> SweepResult:
    """Run (or, with `resume` = an experiment path or "latest", continue) the sweep of a spec file."""
    spec = load_spec(spec_path)
    storage = _storage_path(spec, storage_path)
    # Ray's newer console output ignores verbose=0 and prints each trial's whole config.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Keeping a few checkpoints per trial (run.checkpoints_kept) makes Tune snapshot its state after
    # most epochs, and warn each time that this "may become a bottleneck": it takes milliseconds here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    spec = resolve_data(spec)  # before Ray: a missing store fails in a second, not after Ray's start-up
    spec = resolve_backbones(spec, storage)
    connected = _init_ray(address)
    try:
        return _fit(spec, storage, resume)
    finally:
        # Whoever starts Ray stops it: a local Ray left running after its sweep keeps its daemons and
        # idle workers on the cores that `ecgtune demo` then trains the final model on.
        if connected:
            ray.shutdown()


def _fit(spec: Spec, storage: str, resume: str | None) -> SweepResult:
    started = time.time()
    if resume:
        experiment_path = _latest_experiment(storage, spec.name) if resume == "latest" else resume
        tuner = tune.Tuner.restore(
            experiment_path, trainable=_with_resources(run_trial, spec), resume_errored=True
        )
        searcher = None
    else:
        experiment_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        experiment_path = f"{storage.rstrip('/')}/{experiment_name}"
        sweep = build_tuner(spec, storage, experiment_name)
        tuner, searcher = sweep.tuner, sweep.searcher
    # Before any trial: a report or export of a running or crashed sweep reads the spec from here.
    write_spec(experiment_path, spec)
    results = tuner.fit()
    if searcher is None:  # resumed: Tune restored the searcher inside the Tuner; read what it saved
        searcher = saved_searcher(experiment_path)
    summary = summarize(results, spec, searcher, wall_seconds=time.time() - started)
    write_summary(experiment_path, summary)
    return SweepResult(experiment_path, summary)


def _with_resources(trainable: Callable[[dict[str, Any]], None], spec: Spec) -> Any:
    return tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _init_ray(address: str | None) -> bool:
    """Start a local Ray or connect to a cluster, unless this process already did; whether it did."""
    if ray.is_initialized():
        return False
    # Under `ray job submit`, RAY_ADDRESS points at the cluster; otherwise start a local Ray.
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_cluster_answers(address)
        ray.init(address=address, log_to_driver=False)
        return True
    # A local Ray for one machine keeps every socket on 127.0.0.1: Ray 2.60 otherwise listens on the
    # machine's interfaces, and its job API runs code for anyone who reaches it. Ray reads this setting
    # when it is imported, which has happened by now: set it for the daemons this call starts, and for
    # this process, where ray_constants already holds the value read at import.
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    # "local", never None: None joins the cluster `ray start` last recorded on this machine, and waits
    # forever on one that died uncleanly.
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    return True


def _check_cluster_answers(address: str, timeout_s: float = 5.0) -> None:
    """Fail within seconds, with the address, when no Ray cluster listens there (a cluster that died
    uncleanly leaves its address behind, and ray.init would wait on it)."""
    if "://" in address:  # ray:// clients and job-server URLs: Ray reports those itself
        return
    bootstrap = services.canonicalize_bootstrap_address(address)
    if bootstrap is None:
        return
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(
            f"no Ray cluster answers at {bootstrap} (from {address!r}): {e.strerror or e}. Start one with "
            "`ray start --head`, or run without --address and RAY_ADDRESS for a local Ray"
        ) from None


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _error_message(error: BaseException) -> str:
    """A trial's error in one line: the trainable's own exception ("RuntimeError: ..."), not the
    `ray::ImplicitFunc.train() (pid=..., ip=...)` header, in ANSI colours, that starts a RayTaskError."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    # Others (a dead actor or node; a TuneError holding a traceback's text): their last line says what.
    lines = [line.strip() for line in _ANSI_ESCAPE.sub("", str(error)).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def summarize(
    results: tune.ResultGrid, spec: Spec, searcher: PruneAwareOptunaSearch | None, wall_seconds: float
) -> dict[str, Any]:
    """summary.json's content (`ecgtune.experiment.sweep_summary`) from Tune's results and the searcher."""
    trials = []
    for r in results:
        df = r.metrics_dataframe
        best_objective = float(df[OBJECTIVE].min()) if df is not None and OBJECTIVE in df else None
        error = _error_message(r.error) if r.error else None
        trials.append(
            trial_summary(
                spec,
                r.metrics or {},
                path=r.path,
                config=r.config or {},  # None for a trial the sweep ended before it started
                error=error,
                best_objective=best_objective,
                pretrain_epochs=_pretrain_epochs(df),
            )
        )
    states = searcher.study_states() if searcher is not None else None
    sharing = searcher.sharing_summary() if isinstance(searcher, BackboneSharingSearch) else None
    return sweep_summary(spec, trials, states, wall_seconds, sharing)


def _pretrain_epochs(df: Any) -> tuple[int, int]:
    """(pretraining epochs a trial trained itself, pretraining epochs it reported) from its results."""
    if df is None or "stage" not in df:
        return 0, 0
    pre = df[df["stage"] == "pretrain"].drop_duplicates(EPOCH, keep="last")
    reused = int(pre[REUSED_EPOCH].fillna(False).astype(bool).sum()) if REUSED_EPOCH in pre else 0
    return len(pre) - reused, len(pre)


def format_summary(summary: dict[str, Any], top: int = 5) -> str:
    targets = check_targets([t for t in TARGETS if any(t in tr["ptbxl_val_mae"] for tr in summary["trials"])])
    ranked = sorted(
        (t for t in summary["trials"] if t["objective"] is not None),
        key=lambda t: (t["status"] != "finished", t["objective"]),
    )[:top]
    head = f"{'trial':<14} {'status':<9} {'epochs':>6} {'objective':>9} " + " ".join(
        f"{TARGETS[t].title + ' ' + TARGETS[t].unit:>10}" for t in targets
    )
    lines = [
        f"sweep {summary['sweep']}: {len(summary['trials'])} trials in {summary['wall_seconds']:.0f} s",
        head,
    ]
    for t in ranked:
        maes = " ".join(f"{t['ptbxl_val_mae'][x]:>10.2f}" for x in targets)
        lines.append(f"{t['trial_id']!s:<14} {t['status']:<9} {t['epochs']:>6} {t['objective']:>9.3f} {maes}")
    lines.append(f"epochs reached (epochs: trials): {summary['epochs_reached']}")
    if summary.get("statuses"):
        lines.append("trials: " + ", ".join(f"{n} {s}" for s, n in summary["statuses"].items() if n))
    if summary.get("optuna_states"):
        lines.append(f"as told to TPE: {summary['optuna_states']}")
    if b := summary.get("backbones"):
        lines.append(
            f"backbones: {b['pretrained']} trials pretrained, {b['reused']} reused one from the store "
            f"({b['store']}); pretraining epochs trained {b['pretrain_epochs_trained']} of "
            f"{b['pretrain_epochs_needed']} needed, {b['saved_seconds']:.0f} s of pretraining saved"
        )
    lines.append(
        "PTB-XL validation MAE; objective = mean(MAE / clinical tolerance); finished trials ranked first."
    )
    return "\n".join(lines)

"""The sweep driver: a validated Spec -> Ray Tune (Optuna TPE + ASHA) -> summary.json.

    ecgtune sweep sweeps/smoke.yaml            # local Ray, or the cluster under `ray job submit`
    ecgtune sweep sweeps/smoke.yaml --resume   # continue the newest interrupted run of that spec

Search space and scheduler live here; the trial (`ecgtune.trial`) receives a plain config.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs
import ray
import yaml
from ray import tune
from ray._private import ray_constants, services
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from ray.util.metrics import Gauge

from ecgtune.metrics import SWEEP_TRIALS, KeptGauge
from ecgtune.spec import Spec, StoreSpec, asha_max_t, load_spec, make_sampler, require_store
from ecgtune.targets import TARGETS, check_targets
from ecgtune.trial import metrics_report_interval_s, run_trial

METRIC, MODE = "objective", "min"
SUMMARY_FILE = "summary.json"
SPEC_FILE = "spec.yaml"


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells TPE the truth about trials ASHA stopped.

    Ray hands a stopped trial's last (low-fidelity) result to `on_trial_complete`,
    and OptunaSearch records it as COMPLETE, so TPE would learn epoch-1 values
    as if they were final. A trial that reports fewer epochs than it was
    configured for and did not error is marked PRUNED instead; Optuna then
    uses its last intermediate value, ranked below completed trials.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.told: Counter[str] = Counter()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        stopped_early = (
            not error and result is not None and result.get("epoch", 0) < result.get("total_epochs", 0)
        )
        if stopped_early and trial_id not in self._completed_trials and trial_id in self._ot_trials:
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            self.told["pruned"] += 1
            return
        super().on_trial_complete(trial_id, result=result, error=error)
        self.told["failed" if error else "complete"] += 1

    def study_states(self) -> dict[str, int]:
        return dict(Counter(t.state.name.lower() for t in self._ot_study.get_trials(deepcopy=False)))


class SweepGauges(tune.Callback):
    """Per-sweep trial counts for the Ray dashboard's metrics (running / finished / stopped / error)."""

    def __init__(self, sweep: str):
        self.sweep = sweep
        self.counts: Counter[str] = Counter()
        self.gauge: KeptGauge | None = None

    def _publish(self) -> None:
        if self.gauge is None:
            gauge = Gauge(SWEEP_TRIALS.name, SWEEP_TRIALS.description, SWEEP_TRIALS.labels)
            self.gauge = KeptGauge(gauge, metrics_report_interval_s())
        for state in ("running", "finished", "stopped", "error"):
            self.gauge.set(self.counts[state], {"sweep": self.sweep, "state": state})

    def on_trial_start(self, iteration, trials, trial, **info):
        self.counts["running"] += 1
        self._publish()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.counts["running"] -= 1
        last = trial.last_result or {}
        full = last.get("epoch", 0) >= last.get("total_epochs", 1)
        self.counts["finished" if full else "stopped"] += 1
        self._publish()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.counts["running"] -= 1
        self.counts["error"] += 1
        self._publish()

    def on_experiment_end(self, trials, **info):
        # Stop re-setting the counts; the final ones still reach the metrics agent (measured: a driver
        # that exited 1 s after its last set, with the default 10 s report interval, had it exported).
        if self.gauge is not None:
            self.gauge.release()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state; the gauge is rebuilt on first use.
        return {**self.__dict__, "gauge": None}


@dataclass
class SweepResult:
    experiment_path: str
    summary: dict[str, Any]


def trial_name(trial: Any) -> str:
    # Tune's default name packs the whole (nested) spec into the directory name.
    return f"trial_{trial.trial_id}"


def total_epochs(spec: Spec) -> int:
    return (
        spec.stages.pretrain.epochs if spec.data.pretrain is not None else 0
    ) + spec.stages.finetune.epochs


def resolve_data(spec: Spec) -> Spec:
    """Absolute store paths (building the demo stores here, once, outside a Ray job) so every trial reads
    the same files; a store that is not there fails the sweep before Ray starts, naming its path."""
    data = spec.data.model_copy(
        update={
            "finetune": StoreSpec(path=str(require_store(spec.data.finetune))),
            "pretrain": None
            if spec.data.pretrain is None
            else StoreSpec(path=str(require_store(spec.data.pretrain))),
        }
    )
    return spec.model_copy(update={"data": data})


def _storage_path(spec: Spec, override: str | None) -> str:
    path = override or spec.run.storage_path
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _latest_experiment(storage: str, name: str) -> str:
    candidates = sorted(Path(storage).glob(f"{name}-*/tuner.pkl"))
    if not candidates:
        raise FileNotFoundError(f"no earlier run of sweep {name!r} under {storage} to resume")
    return str(candidates[-1].parent)


def progress_table(spec: Spec) -> tune.CLIReporter:
    """A compact console table: searched values, stage, epoch and per-target MAE — not the whole spec."""
    if spec.variants:
        params = ["variant"]
    else:
        params = [k for k, d in (spec.search.space if spec.search else {}).items() if d.type != "same_as"]
    metrics = {"stage": "stage", "epoch": "epoch", METRIC: METRIC}
    metrics.update({f"ptbxl_val_mae_{t}": f"{TARGETS[t].title} {TARGETS[t].unit}" for t in spec.targets})
    return tune.CLIReporter(
        parameter_columns={p: p.split(".", 1)[-1] for p in params},
        metric_columns=metrics,
        max_report_frequency=30,
        sort_by_metric=True,
    )


def build_tuner(
    spec: Spec, storage: str, experiment_name: str
) -> tuple[tune.Tuner, PruneAwareOptunaSearch | None]:
    search = spec.search
    trainable = tune.with_resources(run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    param_space: dict[str, Any] = {"spec": spec.model_dump(mode="json")}
    searcher = scheduler = None
    num_samples = 1
    max_concurrent = search.max_concurrent_trials if search else 1
    if spec.variants:
        # Fixed experiments (sweeps/paper.yaml): a grid over the named variants, no TPE.
        param_space["variant"] = tune.grid_search(list(spec.variants))
    elif search is not None:
        num_samples = search.num_samples
        sampler = (
            optuna.samplers.TPESampler(
                seed=search.searcher.seed, n_startup_trials=search.searcher.n_startup_trials
            )
            if search.searcher.algorithm == "tpe"
            else optuna.samplers.RandomSampler(seed=search.searcher.seed)
        )
        searcher = PruneAwareOptunaSearch(
            space=make_sampler(spec),  # picklable (resume re-loads the searcher)
            metric=METRIC,
            mode=MODE,
            sampler=sampler,
            study_name=experiment_name,  # unique per sweep run
        )
    if search is not None and search.asha is not None:
        scheduler = ASHAScheduler(
            # finetune_epoch stays 0 through pretraining, so no rung is reached there (spec.ASHASpec.clock).
            time_attr="finetune_epoch" if search.asha.clock == "finetune" else "training_iteration",
            max_t=asha_max_t(spec, search.asha),
            grace_period=search.asha.grace_period,
            reduction_factor=search.asha.reduction_factor,
            brackets=search.asha.brackets,
        )
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
            reuse_actors=spec.run.reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=experiment_name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=spec.run.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.run.checkpoints_kept),
            callbacks=[SweepGauges(spec.name)],
            progress_reporter=progress_table(spec),
            verbose=1,
        ),
    )
    return tuner, searcher


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
    # Ray's newer console output ignores a custom reporter and prints each trial's whole config.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    spec = resolve_data(spec)  # before Ray: a missing store fails in a second, not after Ray's start-up
    _init_ray(address)
    started = time.time()
    if resume:
        experiment_path = _latest_experiment(storage, spec.name) if resume == "latest" else resume
        tuner = tune.Tuner.restore(experiment_path, trainable=_trainable(spec), resume_errored=True)
        searcher = None
    else:
        experiment_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        experiment_path = f"{storage.rstrip('/')}/{experiment_name}"
        tuner, searcher = build_tuner(spec, storage, experiment_name)
    results = tuner.fit()
    summary = summarize(results, spec, searcher, wall_seconds=time.time() - started)
    _write_summary(experiment_path, spec, summary)
    return SweepResult(experiment_path, summary)


def _trainable(spec: Spec):
    return tune.with_resources(run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _init_ray(address: str | None) -> None:
    if ray.is_initialized():
        return
    # Under `ray job submit`, RAY_ADDRESS points at the cluster; otherwise start a local Ray.
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_cluster_answers(address)
        ray.init(address=address, log_to_driver=False)
        return
    # A local Ray for one machine keeps every socket on 127.0.0.1: Ray 2.60 otherwise listens on the
    # machine's interfaces, and its job API runs code for anyone who reaches it. Ray reads this setting
    # when it is imported, which has happened by now: set it for the daemons this call starts, and for
    # this process, where ray_constants already holds the value read at import.
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    # "local", never None: None joins the cluster `ray start` last recorded on this machine, and waits
    # forever on one that died uncleanly.
    ray.init(address="local", include_dashboard=False, log_to_driver=False)


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
):
    """Per-trial outcome and the best full-fidelity trial, as plain JSON-able data."""
    max_t = total_epochs(spec)
    trials = []
    for r in results:
        last = r.metrics or {}
        df = r.metrics_dataframe
        best_objective = float(df[METRIC].min()) if df is not None and METRIC in df else None
        trials.append(
            {
                "trial_id": last.get("trial_id"),
                "path": r.path,
                "config": {k: v for k, v in r.config.items() if k != "spec"},
                "epochs": int(last.get("epoch", 0)),
                # Variants of one sweep can differ in length: compare each trial with its own plan.
                "status": "error"
                if r.error
                else ("finished" if last.get("epoch", 0) >= last.get("total_epochs", max_t) else "stopped"),
                "error": _error_message(r.error) if r.error else None,
                "objective": last.get(METRIC),
                "best_objective": best_objective,
                "ptbxl_val_mae": {t: last.get(f"ptbxl_val_mae_{t}") for t in spec.targets},
                "node_id": last.get("node_id"),
                "device": last.get("device"),
                "time_total_s": last.get("time_total_s"),
            }
        )
    finished = [t for t in trials if t["status"] == "finished" and t["objective"] is not None]
    best = min(finished, key=lambda t: t["objective"]) if finished else None
    per_rung = Counter(t["epochs"] for t in trials)
    return {
        "sweep": spec.name,
        "metric": METRIC,
        "mode": MODE,
        "max_epochs": max_t,
        "wall_seconds": wall_seconds,
        "trials": trials,
        "epochs_reached": {str(k): v for k, v in sorted(per_rung.items())},
        "best": best,
        "optuna_states": searcher.study_states() if searcher is not None else None,
    }


def _write_summary(experiment_path: str, spec: Spec, summary: dict[str, Any]) -> None:
    """summary.json and the resolved spec.yaml beside Tune's results (local path or pyarrow URI)."""
    files = {
        SUMMARY_FILE: json.dumps(summary, indent=2, default=str),
        SPEC_FILE: yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False),
    }
    if "://" in experiment_path:
        fs, root = pyarrow.fs.FileSystem.from_uri(experiment_path)
        for name, text in files.items():
            with fs.open_output_stream(f"{root}/{name}") as f:
                f.write(text.encode())
        return
    for name, text in files.items():
        tmp = Path(experiment_path) / f".{name}.tmp"
        tmp.write_text(text)
        tmp.rename(Path(experiment_path) / name)  # readers never see half a file


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
    if summary.get("optuna_states"):
        lines.append(f"as told to TPE: {summary['optuna_states']}")
    lines.append(
        "PTB-XL validation MAE; objective = mean(MAE / clinical tolerance); finished trials ranked first."
    )
    return "\n".join(lines)

"""The sweep driver: a validated Spec -> Ray Tune (Optuna TPE + ASHA) -> summary.json.

    ecgtune sweep smoke                        # local Ray, or the cluster under `ray job submit`
    ecgtune sweep smoke --resume               # continue the newest interrupted run of that spec

The searcher and the scheduler are `ecgtune.searchers`'; the trial (`ecgtune.trial`) receives a plain
config; the experiment directory's files and the status rule are `ecgtune.experiment`'s. The driver
writes spec.yaml there when the sweep starts and summary.json when it ends.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray._private import ray_constants, services
from ray.tune.schedulers import TrialScheduler

from ecgtune.backbone_search import BackboneSharingSearch
from ecgtune.bounded_tpe import BoundedTPESampler
from ecgtune.data.locate import require_store
from ecgtune.experiment import (
    MODE,
    OBJECTIVE,
    read_spec,
    write_spec,
    write_summary,
)
from ecgtune.sampler import make_sampler
from ecgtune.searchers import DivergenceAwareASHA, PruneAwareOptunaSearch, asha_clock, saved_searcher
from ecgtune.spec import SearcherSpec, Spec, StoreSpec, asha_max_t, load_spec
from ecgtune.stages import require_finetune_labels
from ecgtune.study import StudyLocation, read_warm_start, study_location, write_study_pointer
from ecgtune.sweep_callbacks import ProgressLines, SweepGauges
from ecgtune.sweep_results import summarize
from ecgtune.trial import run_trial
from ecgtune.warm_start import WarmStart, warm_start


@dataclass
class SweepResult:
    experiment_path: str
    summary: dict[str, Any]


@dataclass
class Sweep:
    """A Tuner and the parts of it whose state a caller may read after `fit()` (Tune uses these objects)."""

    tuner: tune.Tuner
    searcher: PruneAwareOptunaSearch | None
    scheduler: TrialScheduler | None
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


# ------------------------------------------------------------------------------ searcher, scheduler


def make_searcher(
    spec: Spec,
    study_name: str,
    searcher_class: type[PruneAwareOptunaSearch] | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> PruneAwareOptunaSearch:
    """The searcher of a sweep with a search section: its sampler (`make_sampler_of`) over its space,
    sharing backbones when the spec says so (`search.backbones`). `storage`: where the Optuna study
    lives (None: in memory). `searcher_class` (same constructor) is for benchmarks that compare
    searchers (bench/replay.py)."""
    search = spec.search
    if search is None:
        raise ValueError(f"spec {spec.name!r} has no search section")
    cls = searcher_class or (
        BackboneSharingSearch if search.backbones is not None else PruneAwareOptunaSearch
    )
    kwargs: dict[str, Any] = {}
    if issubclass(cls, BackboneSharingSearch):
        kwargs = {
            "sharing": search.backbones,
            "pretrain_epochs": spec.pretrain_epochs,
            "first_rung": search.asha.grace_period if search.asha is not None else 1,
        }
    return cls(
        space=make_sampler(spec),  # picklable (resume re-loads the searcher)
        metric=OBJECTIVE,
        mode=MODE,
        sampler=make_sampler_of(search.searcher),
        study_name=study_name,  # unique per sweep run
        storage=storage,
        clock=asha_clock(search.asha),
        **kwargs,
    )


def make_sampler_of(searcher: SearcherSpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a spec's `search.searcher` names, seeded."""
    if searcher.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=searcher.seed)
    if searcher.algorithm == "gp":
        return optuna.samplers.GPSampler(seed=searcher.seed, n_startup_trials=searcher.n_startup_trials)
    return BoundedTPESampler(
        seed=searcher.seed,
        n_startup_trials=searcher.n_startup_trials,
        multivariate=searcher.multivariate,
        history=searcher.tpe_history,
    )


def make_scheduler(spec: Spec, experiment_path: str | None = None) -> DivergenceAwareASHA | None:
    """ASHA on the spec's clock; None without `search.asha`. `experiment_path`: where the sweep's results
    are written, from which a resumed sweep's ASHA rebuilds its rungs (`DivergenceAwareASHA`)."""
    asha = spec.search.asha if spec.search is not None else None
    if asha is None:
        return None
    return DivergenceAwareASHA(
        time_attr=asha_clock(asha),  # metric and mode: TuneConfig's (Tune refuses both)
        max_t=asha_max_t(spec, asha),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
        brackets=asha.brackets,
        experiment_path=experiment_path,
    )



# --------------------------------------------------------------------------------------- the Tuner


def build_tuner(
    spec: Spec,
    storage: str,
    experiment_name: str,
    trainable: Callable[[dict[str, Any]], None] = run_trial,
    stop: tune.Stopper | None = None,
    searcher_class: type[PruneAwareOptunaSearch] | None = None,
    study: StudyLocation | None = None,
    scheduler: TrialScheduler | None = None,
    quiet: bool = False,
) -> Sweep:
    """The Tuner of a sweep. `study`: where its Optuna study is kept (None: in memory). `trainable`,
    `stop`, `searcher_class` and `scheduler` are for benchmarks: a replay of recorded learning curves in
    place of training (bench/replay.py), a stop at a budget, another searcher with the same constructor,
    and another scheduler than the spec's ASHA (Tune's HyperBand). `quiet`: no console lines and no
    dashboard series (a benchmark replaying thousands of trials)."""
    search = spec.search
    trainable = _with_resources(trainable, spec)
    param_space: dict[str, Any] = {"spec": spec.model_dump(mode="json")}
    searcher = None
    num_samples = 1
    if spec.variants:
        # Fixed experiments (sweeps/paper.yaml): a grid over the named variants, no TPE.
        param_space["variant"] = tune.grid_search(list(spec.variants))
    elif search is not None:
        num_samples = search.num_samples
        searcher = make_searcher(
            spec,
            study_name=study.name if study is not None else experiment_name,
            searcher_class=searcher_class,
            storage=study.open() if study is not None else None,
        )
    scheduler = scheduler or make_scheduler(spec, f"{storage.rstrip('/')}/{experiment_name}")
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
            time_budget_s=search.time_budget_s if search else None,
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
            callbacks=[] if quiet else [gauges, ProgressLines(spec)],
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
    overrides: Sequence[str] = (),
    warm_start: Sequence[str] = (),
) -> SweepResult:
    """Run (or, with `resume` = an experiment path or "latest", continue) the sweep of a spec file,
    with `overrides` (`KEY=VALUE`, `ecgtune sweep --set`) applied to it; the experiment's spec.yaml is the
    spec as run, overrides included. `warm_start`: earlier sweeps' experiment directories whose trials
    the searcher starts from (`ecgtune.warm_start`)."""
    if resume and warm_start:
        raise ValueError("--warm-start starts a new sweep; a resumed one keeps the trials it started with")
    spec = load_spec(spec_path, overrides)
    storage = _storage_path(spec, storage_path)
    # Ray's newer console output ignores verbose=0 and prints each trial's whole config.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Keeping a few checkpoints per trial (run.checkpoints_kept) makes Tune snapshot its state after
    # most epochs, and warn each time that this "may become a bottleneck": it takes milliseconds here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    spec = resolve_data(spec)  # before Ray: a missing store fails in a second, not after Ray's start-up
    spec = resolve_backbones(spec, storage)
    earlier = load_warm_start(spec, list(warm_start))  # before Ray: an incompatible run fails at once
    connected = _init_ray(address)
    try:
        return _fit(spec, storage, resume, earlier)
    finally:
        # Whoever starts Ray stops it: a local Ray left running after its sweep keeps its daemons and
        # idle workers on the cores that `ecgtune demo` then trains the final model on.
        if connected:
            ray.shutdown()


def _fit(spec: Spec, storage: str, resume: str | None, earlier: list[WarmStart]) -> SweepResult:
    started = time.time()
    if resume:
        experiment_path = _latest_experiment(storage, spec.name) if resume == "latest" else resume
        # The spec as the sweep ran it (overrides and resolved paths included), not the file as it is now.
        spec = read_spec(experiment_path) or spec
        tuner = tune.Tuner.restore(
            experiment_path, trainable=_with_resources(run_trial, spec), resume_errored=True
        )
        searcher = None
    else:
        experiment_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        experiment_path = f"{storage.rstrip('/')}/{experiment_name}"
        study = study_location(spec.run.optuna_storage, experiment_path, experiment_name)
        sweep = build_tuner(spec, storage, experiment_name, study=study)
        tuner, searcher = sweep.tuner, sweep.searcher
        for w in earlier:  # before the first suggestion: TPE starts from them
            searcher.add_earlier_trials(w.trials, w.run)
        write_study_pointer(experiment_path, study, [w.record() for w in earlier])
        # Before any trial: a report or export of a running or crashed sweep reads the spec from here.
        write_spec(experiment_path, spec)
    results = tuner.fit()
    if searcher is None:  # resumed: Tune restored the searcher inside the Tuner; read what it saved
        searcher = saved_searcher(experiment_path)
    summary = summarize(results, spec, searcher, wall_seconds=time.time() - started)
    summary["warm_start"] = read_warm_start(experiment_path)
    write_summary(experiment_path, summary)
    return SweepResult(experiment_path, summary)


def load_warm_start(spec: Spec, runs: list[str]) -> list[WarmStart]:
    """The earlier sweeps' trials a new sweep starts from; refused in one line when not compatible."""
    if not runs:
        return []
    if spec.search is None or spec.variants:
        raise ValueError(f"--warm-start: {spec.name} has no search space for a searcher to warm-start")
    return warm_start(spec, runs)


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

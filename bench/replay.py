"""Search strategies replayed on the curve-table surrogate through ecgtune's real driver (docs/benchmarks.md
part 4): `ecgtune.search.build_tuner`, real Tune, ecgtune's searchers (`PruneAwareOptunaSearch`,
`BackboneSharingSearch`) and ASHA, with a **replay trainable** in place of training. It reports the
epochs the blackbox (bench/blackbox.py) predicts for the suggested configuration, each with what it costs
in compute seconds at the shipped sweep's proportions (bench/cost_model.py), and sleeps that cost times
`--time-scale`, so that trials interleave on ASHA's asynchronous rungs as on a cluster.

With backbone sharing, the replay trainable goes through a real backbone store (`ecgtune.backbones`, in a
temporary folder): a trial whose backbone is stored reports its pretraining epochs as reused at no cost and
pays the entry's load instead; one that waited for another trial's pretraining pays the wait.

A run stops when its budget of compute seconds is spent. Budgets are given in full-trial equivalents
(FTE): the mean cost of one trial trained through every epoch of both stages, over the space.

    python -m bench.replay run --seeds 30 --budget-fte 96        # resumable; appends to bench/data/replay/
    python -m bench.replay run --strategies tpe_asha tpe_asha+share --seeds 30
    python -m bench.replay report                                # tables and plot (bench/replay_analysis.py)
    python -m bench.replay driver-cost --trials 5000             # driver time per trial as trials grow

Each strategy draws its own random streams: seed i of strategy s is a hash of (s, i), never shared.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from ray import tune

from bench.curve_table import SPACE_SPEC, TABLE_FILE

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "data" / "replay"  # committed: one compact line per run
REPLAY_KEY = "replay"  # the spec's `origin` entry that tells the replay trainable what to replay
SHARE = {"trials_per_backbone": 4, "pick": "best", "top_fraction": 0.5}  # the shipped design
# name -> how it differs from the table's spec (bench/curve_table.yaml: TPE, 8 start-up trials, ASHA on
# fine-tuning epochs with rungs 3 and 9, 4 trials at a time). "+share" in a name adds backbone sharing.
STRATEGIES: dict[str, dict[str, Any]] = {
    "random": {"algorithm": "random", "asha": None},
    "random_asha": {"algorithm": "random"},
    "tpe_asha": {},
    "tpe_asha_scaled": {"startup": "scaled"},
    "tpe_mv_asha": {"multivariate": True},
    "gp_asha": {"algorithm": "gp"},
    "random_hyperband": {"algorithm": "random", "scheduler": "hyperband"},
}


def parse_strategy(name: str) -> tuple[str, dict[str, Any] | None]:
    """`tpe_asha+share` -> ("tpe_asha", SHARE); `tpe_asha+share(k=2,oldest)` -> a sharing variant.
    A `+warm` suffix (a warm-started second sweep, `run_strategy`) changes neither."""
    base, _, share = name.removesuffix("+warm").partition("+")
    if base not in STRATEGIES:
        raise ValueError(f"unknown strategy {base!r}; known: {', '.join(STRATEGIES)}")
    if not share:
        return base, None
    sharing = dict(SHARE)
    if share.startswith("share(") and share.endswith(")"):
        for part in share[6:-1].split(","):
            if part.startswith("k="):
                sharing["trials_per_backbone"] = int(part[2:])
            elif part in ("best", "oldest"):
                sharing["pick"] = part
            elif part.startswith("top="):
                sharing["top_fraction"] = float(part[4:])
    elif share != "share":
        raise ValueError(f"{name}: expected +share or +share(k=N,best|oldest,top=F)")
    return base, sharing


def strategy_seed(name: str, index: int) -> int:
    """Seed `index` of strategy `name`: independent of every other strategy's streams."""
    return int(hashlib.sha256(f"{name}/{index}".encode()).hexdigest()[:8], 16) % 2**31


# ----------------------------------------------------------------------------------- the trainable


@functools.cache
def _cube_keys() -> tuple[str, ...]:
    from bench.curve_table import load_space_spec
    from bench.unit_cube import cube_keys

    return tuple(cube_keys(load_space_spec().search.space))


def searched_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The table-space values the searcher gave a trial: its config holds every searched key."""
    return {k: config[k] for k in _cube_keys()}


def replay_trial(config: dict[str, Any]) -> None:
    """A Tune function trainable that reports the blackbox's epochs for its configuration."""
    import torch

    from bench.blackbox import load_blackbox
    from ecgtune.backbones import Backbone, BackboneStore, ClaimTiming, acquire, backbone_key

    setting = config["spec"]["origin"][REPLAY_KEY]
    seed = config["spec"]["seed"]
    values = searched_values(config)
    bb = load_blackbox(setting["blackbox"], setting.get("table"))
    epochs, costs = bb.curve(values), bb.costs(values)
    scale, n_pre = setting["time_scale"], bb.pretrain_epochs
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a trial HyperBand paused
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / "next.json").read_text())["next"]
    reused, extra, claim, store = False, 0.0, None, None
    if setting.get("store") and start < n_pre:
        store = BackboneStore(setting["store"])
        material = {"replay": {k: v for k, v in values.items() if k.startswith(("model.", "pretrain."))}}
        material["seed"] = seed
        key = backbone_key(material)
        waited = time.monotonic()
        got = acquire(store, key, material, tune.get_context().get_trial_id(),
                      ClaimTiming(lease_s=60, poll_s=0.01, settle_s=0.002))  # fmt: skip
        waited = time.monotonic() - waited
        if isinstance(got, Backbone):
            # Loading the entry, and the slot held while waiting for its pretrainer, are compute spent.
            reused, extra = True, costs.load + (waited / scale if scale else 0.0)
        else:
            claim = got
    try:
        for i in range(start, len(epochs)):
            e = epochs[i]
            pretraining = e["stage"] == "pretrain"
            cost = (
                0.0
                if reused and pretraining
                else costs.pretrain_epoch
                if pretraining
                else costs.finetune_epoch
            )
            if reused and i == n_pre:
                cost += extra
            time.sleep(cost * scale)
            metrics = {**e, "compute_seconds": cost, "reused_epoch": reused and pretraining}
            if claim is not None and i == n_pre - 1:
                store.put(Backbone(claim.key, material, {"w": torch.zeros(1)}, epochs[:n_pre], None))
                claim.release()
                claim = None
            # HyperBand pauses a trial only after a result at one of its milestones (fine-tuning epochs
            # 1 and 3 here): a checkpoint there is all a paused trial needs to continue.
            if e["finetune_epoch"] in setting.get("checkpoint_at", ()):
                with tempfile.TemporaryDirectory() as d:
                    (Path(d) / "next.json").write_text(json.dumps({"next": i + 1}))
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
            else:
                tune.report(metrics)
    finally:
        if claim is not None:
            claim.release()


# ------------------------------------------------------------------------------------- the runs


class Budget(tune.Stopper):
    """Records every result in the order the driver saw it and ends the experiment once `limit`
    compute seconds were spent (Tune calls a stopper on every result, before the scheduler decides;
    and once more with a trial's last result when its function returns, which is not another epoch)."""

    def __init__(self, limit: float | None):
        self.limit = limit
        self.spent = 0.0
        # trial, epoch, objective, total epochs, compute s, reused, pretraining, clock
        self.events: list[tuple] = []
        self._seen: set[tuple[str, int]] = set()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if (trial_id, int(result["epoch"])) in self._seen:
            return False
        self._seen.add((trial_id, int(result["epoch"])))
        value = result.get("objective")
        finite = value is not None and math.isfinite(value)
        cost = float(result.get("compute_seconds", 0.0))
        self.spent += cost
        self.events.append(
            (trial_id, int(result["epoch"]), value if finite else None, int(result["total_epochs"]), cost,
             bool(result.get("reused_epoch")), result.get("stage") == "pretrain", time.perf_counter())
        )  # fmt: skip
        return False

    def stop_all(self) -> bool:
        return self.limit is not None and self.spent >= self.limit


def strategy_spec(
    name: str, seed: int, setting: Mapping[str, Any], concurrency: int, startup: int | None = None
):
    """The table's spec, set up as one strategy: its searcher, scheduler, sharing and replay setting."""
    from ecgtune.spec import BackboneSharingSpec, load_spec

    base, sharing = parse_strategy(name)
    how = STRATEGIES[base]
    spec = load_spec(SPACE_SPEC)
    search = spec.search
    searcher = search.searcher.model_copy(
        update={
            "seed": seed,
            "algorithm": how.get("algorithm", "tpe"),
            "multivariate": how.get("multivariate", False),
            "n_startup_trials": startup if startup is not None else search.searcher.n_startup_trials,
        }
    )
    update = {
        "searcher": searcher,
        "asha": None if "asha" in how or how.get("scheduler") else search.asha,
        "num_samples": 100_000,
        "max_concurrent_trials": concurrency,
        "backbones": BackboneSharingSpec(**sharing) if sharing else None,
    }
    run = spec.run.model_copy(update={"reuse_backbones": sharing is not None})
    origin = {REPLAY_KEY: {**setting, "store": setting.get("store") if sharing else None}}
    return spec.model_copy(
        update={
            "search": search.model_copy(update=update),
            "origin": origin,
            "run": run,
            "resources": spec.resources.model_copy(update={"cpu": 0.25}),
        }
    )


HYPERBAND_MILESTONES = (1, 3)  # HyperBand's rungs below max_t 9 with reduction factor 3


def hyperband(spec):
    """Tune's synchronous HyperBand on the fine-tuning clock: it pauses trials between rungs."""
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(
        time_attr="finetune_epoch", max_t=spec.stages.finetune.epochs, reduction_factor=3
    )


def run_strategy(name: str, index: int, budget_s: float | None, setting: dict[str, Any], concurrency: int,
                 startup: int | None = None, num_samples: int | None = None,
                 searcher_class: type | None = None, quiet: bool = True, keep_events: bool = False,
                 tpe_history: int | None = None, journal: bool = False) -> dict[str, Any]:  # fmt: skip
    """Seed `index` of one strategy through ecgtune's driver; the events in the order the driver saw them.
    `journal`: keep the Optuna study in a journal file in the experiment, as a real sweep does (else in
    memory, as the replays do)."""
    import ecgtune.search as driver
    from ecgtune.study import study_location

    base, sharing = parse_strategy(name)
    with tempfile.TemporaryDirectory() as storage, contextlib.redirect_stdout(io.StringIO()):
        setting = {
            **setting,
            "store": f"{storage}/backbones",
            "checkpoint_at": HYPERBAND_MILESTONES if STRATEGIES[base].get("scheduler") == "hyperband" else (),
        }

        def sweep_of(strategy: str, seed: int, experiment: str):
            spec = strategy_spec(strategy, seed, setting, concurrency, startup)
            if tpe_history is not None:
                searcher = spec.search.searcher.model_copy(update={"tpe_history": tpe_history})
                spec = spec.model_copy(
                    update={"search": spec.search.model_copy(update={"searcher": searcher})}
                )
            if num_samples is not None:
                spec = spec.model_copy(
                    update={"search": spec.search.model_copy(update={"num_samples": num_samples})}
                )
            stop = Budget(budget_s)
            study = None
            if journal:
                Path(storage, experiment).mkdir(parents=True, exist_ok=True)
                study = study_location(None, f"{storage}/{experiment}", experiment)
            sweep = driver.build_tuner(
                spec,
                storage,
                experiment,
                trainable=replay_trial,
                stop=stop,
                searcher_class=searcher_class,
                study=study,
                scheduler=hyperband(spec) if STRATEGIES[base].get("scheduler") == "hyperband" else None,
                quiet=quiet,
            )
            return spec, sweep, stop

        earlier = []
        if name.endswith("+warm"):
            # A first sweep of the same strategy and budget, with a seed of its own; the second starts
            # from its finished and stopped trials (ecgtune.warm_start's path) and shares its store.
            cold = name.removesuffix("+warm")
            _, first, _ = sweep_of(cold, strategy_seed(cold + "/first", index), f"first-{index}")
            first.tuner.fit()
            states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            earlier = first.searcher._ot_study.get_trials(deepcopy=True, states=states)
        seed = strategy_seed(name, index)
        spec, sweep, stop = sweep_of(name.removesuffix("+warm"), seed, f"replay-{index}")
        if earlier:
            sweep.searcher.add_earlier_trials(earlier, "first sweep")
        started = time.perf_counter()
        sweep.tuner.fit()
        wall = time.perf_counter() - started
        searcher = sweep.searcher  # read while its study (a journal file in `storage`) is there
        optuna_states = searcher.study_states() if searcher is not None else None
    return {
        "strategy": name,
        "index": index,
        "seed": seed,
        "startup": spec.search.searcher.n_startup_trials,
        "budget_s": budget_s,
        "wall_s": wall,
        **trace(stop.events),
        **({"events": stop.events} if keep_events else {}),
        "optuna_states": optuna_states,
        "sharing": searcher.sharing_summary() if hasattr(searcher, "sharing_summary") else None,
    }


def trace(events: list[tuple]) -> dict[str, Any]:
    """A run, compactly: the compute spent when the best full-fidelity objective so far improved, and
    where the compute went. Only trials that trained every epoch count: a stopped trial's low-fidelity
    value is not a model anyone would deploy."""
    spent, best, steps = 0.0, math.inf, []
    pretrain_s, trials, full, reused = 0.0, set(), 0, set()
    for trial, epoch, value, total, cost, was_reused, pretraining, _ in events:
        spent += cost
        pretrain_s += cost if pretraining else 0.0
        trials.add(trial)
        if was_reused:
            reused.add(trial)
        if epoch == total and value is not None:
            full += 1
            if value < best:
                best = value
                steps.append((spent, value))
    return {
        "best_steps": steps,
        "spent_s": spent,
        "pretrain_s": pretrain_s,
        "trials": len(trials),
        "full_trials": full,
        "reusing_trials": len(reused),
    }


def init_ray() -> None:
    """A local Ray on loopback for the replays (ecgtune's own start-up rule, with the CPUs it finds)."""
    from ecgtune.search import _init_ray

    _init_ray(None)


def full_trial_seconds(kind: str = "surrogate", table: str | None = None, samples: int = 20_000) -> float:
    """One FTE: the mean compute of a trial trained through every epoch, over uniform draws of the space."""
    from scipy.stats import qmc

    from bench.blackbox import load_blackbox
    from bench.curve_table import load_space_spec
    from bench.unit_cube import cube_keys, decode

    space = load_space_spec().search.space
    keys = cube_keys(space)
    bb = load_blackbox(kind, table)
    points = qmc.Sobol(len(keys), scramble=True, seed=123).random(samples)
    total = 0.0
    for u in points:
        c = bb.costs(decode(space, keys, u))
        total += c.full_trial(bb.pretrain_epochs, bb.finetune_epochs)
    return total / samples


# --------------------------------------------------------------------------------------- commands


def results_file(name: str, budget_fte: float, tag: str = "") -> Path:
    """`<strategy>@<budget>fte[-<tag>].jsonl`: one file per strategy, budget and blackbox."""
    return RESULTS_DIR / f"{name}@{budget_fte:g}fte{'-' + tag if tag else ''}.jsonl"


def cmd_run(args: argparse.Namespace) -> None:
    """Every (seed, strategy) not yet in the results, seeds outermost (a partial run has every strategy at
    its first seeds); with --jobs N, N processes (each with its own local Ray) share the list."""
    if args.jobs > 1:
        _run_in_processes(args)
        return
    args.table = args.table.resolve()  # Ray's workers run in directories of their own
    fte = full_trial_seconds(args.blackbox, str(args.table))
    setting = {"blackbox": args.blackbox, "table": str(args.table), "time_scale": args.time_scale / fte}
    work = [(index, name) for index in range(args.seeds) for name in args.strategies]
    work = [w for i, w in enumerate(work) if i % args.shards == args.shard]
    ray_started = False
    for index, name in work:
        base, _ = parse_strategy(name)
        scaled = STRATEGIES[base].get("startup") == "scaled"
        out = results_file(name, args.budget_fte, args.tag)
        if index in _done(out):
            continue
        if not ray_started:
            init_ray()
            ray_started = True
        # 10% of the trials the budget buys at an ASHA trial's mean cost (--mean-trial-fte, measured).
        startup = max(2, round(0.1 * args.budget_fte / args.mean_trial_fte)) if scaled else None
        r = run_strategy(name, index, args.budget_fte * fte, setting, args.concurrency, startup)
        r.update(fte_seconds=fte, budget_fte=args.budget_fte)
        _append(out, r)
        best = r["best_steps"][-1][1] if r["best_steps"] else math.inf
        print(
            f"{name:<28} seed {index:>2}: {r['trials']:>4} trials ({r['reusing_trials']} reusing), best "
            f"{best:.4f}, pretraining {100 * r['pretrain_s'] / max(r['spent_s'], 1e-9):.0f}% of compute, "
            f"{r['wall_s']:5.1f} s",
            flush=True,
        )


def _done(out: Path) -> set[int]:
    if not out.exists():
        return set()
    return {json.loads(line)["index"] for line in out.read_text().splitlines() if line.strip()}


def _append(out: Path, record: dict[str, Any]) -> None:
    """One line per run, under a lock: shards of one strategy write the same file."""
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")
        f.flush()


def _run_in_processes(args: argparse.Namespace) -> None:
    import subprocess
    import sys

    base = [a for a in sys.argv[1:] if not a.startswith("--jobs")]
    if "--jobs" in sys.argv:
        i = sys.argv.index("--jobs")
        base = [a for j, a in enumerate(sys.argv[1:], 1) if j not in (i, i + 1)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.replay", *base, "--shard", str(k), "--shards", str(args.jobs)]
        )
        for k in range(args.jobs)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a replay process failed: exit statuses {codes}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="strategies x seeds at one budget (resumable)")
    r.add_argument("--strategies", nargs="+", default=[*STRATEGIES, *(f"{s}+share" for s in STRATEGIES)])
    r.add_argument("--seeds", type=int, default=30)
    r.add_argument("--budget-fte", type=float, default=96.0)
    r.add_argument("--mean-trial-fte", type=float, default=0.6, help="for the scaled start-up")
    r.add_argument("--time-scale", type=float, default=0.3, help="wall seconds a full trial sleeps")
    r.add_argument("--concurrency", type=int, default=4)
    r.add_argument(
        "--blackbox",
        default="surrogate",
        choices=["surrogate", "surrogate-proportional", "surrogate-fit", "tabular", "tabular-by-backbone"],
    )
    r.add_argument("--table", type=Path, default=TABLE_FILE)
    r.add_argument("--jobs", type=int, default=1, help="processes, each with its own local Ray")
    r.add_argument("--tag", default="", help="results file tag (another blackbox or table)")
    r.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    r.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    o = sub.add_parser("report", help="tables and plot (bench/replay_analysis.py)")
    o.add_argument("--budget-fte", type=float, default=96.0)
    o.add_argument("--tag", default="", help="results tag (e.g. proportional)")
    o.add_argument("--blackbox", default="surrogate", help="the blackbox the tagged runs used")
    o.add_argument("--also-fte", type=float, help="add strategies recorded only at this larger budget")
    d = sub.add_parser("driver-cost", help="driver time per trial up to --trials trials")
    d.add_argument("--trials", type=int, default=1000)
    d.add_argument("--concurrency", type=int, default=4)
    d.add_argument(
        "--history", type=int, help="TPE's history (default: the spec's search.searcher.tpe_history)"
    )
    d.add_argument("--memory", action="store_true", help="the study in memory (default: a journal file)")
    args = p.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if args.command == "run":
        cmd_run(args)
    elif args.command == "report":
        from bench.replay_analysis import report

        report(args.budget_fte, args.tag, args.blackbox, args.also_fte)
    else:
        from bench.driver_cost import driver_cost

        driver_cost(args.trials, args.concurrency, args.history, memory=args.memory)


if __name__ == "__main__":
    # Run as the module `bench.replay`, not as `__main__`: Tune pickles the trainable, the searcher and
    # the stopper by their module's name, and Ray's workers can import `bench.replay`, never a `__main__`.
    importlib.import_module("bench.replay").main()

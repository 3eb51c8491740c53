"""The learning-curve table (docs/benchmarks.md part 4): every configuration of a grid, trained once
through every epoch of both stages, with the objective, the four MAEs and the wall time per epoch.

Tabular HPO benchmarks (LCBench, NAS-Bench-201) train each configuration once and let searchers replay
the recorded curves; `bench.replay` does that through ecgtune's real driver. The grid is the search
space of `bench/curve_table.yaml` (categorical entries, and same_as copies that follow them); the data
are the demo stores (pretraining on the DeepFake GAN's ECGs, fine-tuning on simulated PTB-XL with exact
labels plus measurement-program label noise, validation fold of 221 ECGs).

    python -m bench.curve_table build --workers 2      # ~1.6 h on 2 cores; resumes where it stopped
    python -m bench.curve_table verify --rows 2        # older rows reproduce with today's code?
    python -m bench.curve_table pack                   # -> bench/data/curve_table.json.gz
    python -m bench.curve_table show                   # a summary of the packed table

Rows are appended to `<work>/rows.jsonl` as each configuration finishes, so an interrupted build
loses at most the configurations in flight.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import itertools
import json
import multiprocessing
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPACE_SPEC = REPO / "bench" / "curve_table.yaml"
TABLE_FILE = REPO / "bench" / "data" / "curve_table.json.gz"
TABLE_FORMAT = 1
# Per epoch, what a replay reports (the keys a real trial reports under these names; `ecgtune.stages`).
EPOCH_KEYS = (
    "epoch",
    "stage",
    "stage_epoch",
    "finetune_epoch",
    "objective",
    "diverged",
    "train_loss",
    "epoch_seconds",
    "ptbxl_val_mae_hr",
    "ptbxl_val_mae_pr",
    "ptbxl_val_mae_qrs",
    "ptbxl_val_mae_qt",
)


def grid_keys(space: Mapping[str, Any]) -> list[str]:
    """The grid's axes: every space entry but the `same_as` copies, which follow their target."""
    return sorted(k for k in space if space[k].type != "same_as")


def grid(space: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every configuration of a space whose entries are all categorical (or copies), in a fixed order."""
    keys = grid_keys(space)
    not_grid = [k for k in keys if space[k].type != "categorical"]
    if not_grid:
        raise ValueError(f"{SPACE_SPEC}: search.space entries {not_grid} are not categorical: not a grid")
    values = itertools.product(*(space[k].choices for k in keys))
    return [dict(zip(keys, v, strict=True)) for v in values]


def config_key(params: Mapping[str, Any]) -> str:
    """A configuration's name in the table: its searched values, in key order."""
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)


def load_space_spec(path: Path = SPACE_SPEC):
    from ecgtune.spec import load_spec

    return load_spec(path)


# ------------------------------------------------------------------------------------------ build


def _train_one(args: tuple[dict[str, Any], str, str]) -> dict[str, Any]:
    """Train one configuration through every epoch; its row of the table."""
    import math

    import torch

    from ecgtune.models import build_model
    from ecgtune.spec import apply_params, spec_from_dict
    from ecgtune.stages import TwoStageRun

    params, spec_json, commit = args
    torch.set_num_threads(1)  # one configuration per core
    spec = apply_params(spec_from_dict(json.loads(spec_json)), params)
    started = time.perf_counter()
    run = TwoStageRun(spec, device="cpu")
    setup_seconds = time.perf_counter() - started
    n_params = sum(p.numel() for p in build_model(spec.network_config()).parameters())
    epochs = []
    while not run.done:
        metrics = run.step()
        epochs.append({k: metrics.get(k) for k in EPOCH_KEYS})
    for e in epochs:  # JSON has no NaN: a diverged epoch's objective is null
        for k, v in e.items():
            if isinstance(v, float) and not math.isfinite(v):
                e[k] = None
    return {
        "config": params,
        "key": config_key(params),
        "parameters": n_params,
        "setup_seconds": setup_seconds,
        "git_commit": commit,  # the code that trained this row (a table may grow over several commits)
        "epochs": epochs,
    }


def _done_keys(rows_file: Path) -> set[str]:
    if not rows_file.is_file():
        return set()
    return {json.loads(line)["key"] for line in rows_file.read_text().splitlines() if line.strip()}


def _resolved_spec_json(spec) -> str:
    """The spec with absolute store paths, so worker processes read the same stores without building."""
    from ecgtune.search import resolve_data

    return json.dumps(resolve_data(spec).model_dump(mode="json"))


def build(work: Path, workers: int, seed: int) -> None:
    from ecgtune.progress import Progress

    spec = load_space_spec()
    configs = grid(spec.search.space)
    random.Random(seed).shuffle(configs)  # a partial table is a uniform sample of the grid
    work.mkdir(parents=True, exist_ok=True)
    rows_file = work / "rows.jsonl"
    done = _done_keys(rows_file)
    todo = [c for c in configs if config_key(c) not in done]
    print(f"{len(configs)} configurations, {len(done)} done, {len(todo)} to train on {workers} processes")
    spec_json = _resolved_spec_json(spec)
    commit = _git_commit()
    progress = Progress(len(todo), "curve table", unit="configuration")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=8) as pool, rows_file.open("a") as out:
        for row in pool.imap_unordered(_train_one, [(c, spec_json, commit) for c in todo]):
            out.write(json.dumps(row) + "\n")
            out.flush()
            progress.update(1)
    progress.close()


def verify(work: Path, n: int, seed: int) -> None:
    """Retrain `n` rows already in the table with today's code and print how far their recorded
    objectives and MAEs are from the new ones: a table that grew over several commits is one table
    only if the older rows reproduce."""
    rows = [json.loads(line) for line in (work / "rows.jsonl").read_text().splitlines() if line.strip()]
    picked = random.Random(seed).sample(rows, n)
    spec_json = _resolved_spec_json(load_space_spec())
    commit = _git_commit()
    for old in picked:
        new = _train_one((old["config"], spec_json, commit))
        worst = max(
            abs((a[k] or 0.0) - (b[k] or 0.0))
            for a, b in zip(old["epochs"], new["epochs"], strict=True)
            for k in EPOCH_KEYS
            if k == "objective" or k.startswith("ptbxl_val_mae_")
        )
        print(
            f"{old['key']}: recorded at {old.get('git_commit', 'unknown')[:8]}, retrained at {commit[:8]}: "
            f"largest difference over {len(new['epochs'])} epochs {worst:.3g}"
        )


# ------------------------------------------------------------------------------------------- pack


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(spec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the table's numbers come from: generator seeds, store keys, code, machine."""
    import platform

    import torch

    from ecgtune import __version__
    from ecgtune.data.locate import require_store
    from ecgtune.data.store import ECGStore

    stores = {}
    for stage in ("pretrain", "finetune"):
        store = ECGStore(require_store(getattr(spec.data, stage)))
        p = store.provenance
        stores[stage] = {
            "key": store.key,
            "kind": p.get("kind"),
            "splits": p.get("splits"),
            "source": {k: p.get(k) for k in ("generator", "seed", "n", "simulation") if k in p},
        }
    return {
        "ecgtune_version": __version__,
        "git_commits": dict(Counter(r.get("git_commit", "unknown") for r in rows)),  # commit: rows
        "space_spec": SPACE_SPEC.read_text(),
        "stores": stores,
        "demo_recipe": "ecgtune.data.demo: DeepFake GAN n=640 seed 0; simulated PTB-XL n=2200 seed 0 "
        "with label noise",
        # The table's stores were built once, at the first rows' time; later rows read the same stores.
        "stores_built_by": "commit 2f73845 (`ecgtune data demo`; rebuilt at that commit on 2026-12-02 the "
        "fine-tuning store's signals and labels are byte-identical; later simulators centre PR at 160 ms "
        "rather than 156 ms, so today's demo store differs; the DeepFake store is unchanged)",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads_per_configuration": 1,
        },
        "packed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def pack(work: Path, out: Path = TABLE_FILE) -> None:
    spec = load_space_spec()
    rows = [json.loads(line) for line in (work / "rows.jsonl").read_text().splitlines() if line.strip()]
    expected = {config_key(c) for c in grid(spec.search.space)}
    rows = sorted({r["key"]: r for r in rows if r["key"] in expected}.values(), key=lambda r: r["key"])
    missing = len(expected) - len(rows)
    table = {
        "format": TABLE_FORMAT,
        "configurations": len(expected),
        "missing": missing,
        "provenance": provenance(spec, rows),
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with gzip.open(tmp, "wt") as f:
        json.dump(table, f, separators=(",", ":"))
    tmp.replace(out)
    print(f"{out}: {len(rows)} rows ({missing} of the grid missing), {out.stat().st_size / 1e3:.0f} kB")


# ------------------------------------------------------------------------------------------- read


class CurveTable:
    """The packed table: a configuration's epochs by its searched values."""

    def __init__(self, path: Path = TABLE_FILE):
        with gzip.open(path, "rt") as f:
            data = json.load(f)
        if data.get("format") != TABLE_FORMAT:
            raise ValueError(f"{path}: table format {data.get('format')!r}, expected {TABLE_FORMAT}")
        self.path = path
        self.provenance = data["provenance"]
        self.rows = {r["key"]: r for r in data["rows"]}
        self.missing = data["missing"]

    def epochs(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        key = config_key(params)
        if key not in self.rows:
            raise KeyError(f"{self.path}: no row for configuration {key}")
        return self.rows[key]["epochs"]

    def require_grid(self, space: Mapping[str, Any]) -> None:
        """Refuse a table without a row for every configuration of `space`: a replay would suggest one
        and fail that trial, and then the next, without ever spending its budget."""
        missing = [c for c in grid(space) if config_key(c) not in self.rows]
        if missing:
            raise ValueError(
                f"{self.path}: no row for {len(missing)} of the grid's {len(grid(space))} configurations "
                f"of {SPACE_SPEC} (e.g. {config_key(missing[0])}); build and pack the table for this space"
            )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows.values())

    def __len__(self) -> int:
        return len(self.rows)


def final_objective(row: Mapping[str, Any]) -> float:
    """A configuration's objective after its last epoch (inf when it diverged)."""
    last = row["epochs"][-1]
    return float("inf") if last["objective"] is None or last["diverged"] else float(last["objective"])


def show(path: Path) -> None:
    table = CurveTable(path)
    finals = sorted(final_objective(r) for r in table)
    diverged = sum(f == float("inf") for f in finals)
    seconds = sum(e["epoch_seconds"] or 0 for r in table for e in r["epochs"])
    print(
        f"{path}: {len(table)} configurations ({table.missing} missing), {diverged} diverged, "
        f"{seconds / 3600:.2f} h of training recorded"
    )
    ok = [f for f in finals if f != float("inf")]
    if ok:
        q = [ok[int(p * (len(ok) - 1))] for p in (0, 0.1, 0.5, 0.9, 1)]
        print("final objective: min {:.3f}, p10 {:.3f}, median {:.3f}, p90 {:.3f}, max {:.3f}".format(*q))


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.curve_table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train every configuration (resumable)")
    b.add_argument("--work", type=Path, default=Path("runs/curve-table"))
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--seed", type=int, default=0, help="order of the configurations")
    v = sub.add_parser("verify", help="retrain a few recorded rows with today's code and compare")
    v.add_argument("--work", type=Path, default=Path("runs/curve-table"))
    v.add_argument("--rows", type=int, default=2)
    v.add_argument("--seed", type=int, default=0)
    k = sub.add_parser("pack", help="compress the rows with their provenance")
    k.add_argument("--work", type=Path, default=Path("runs/curve-table"))
    k.add_argument("--out", type=Path, default=TABLE_FILE)
    s = sub.add_parser("show", help="summarise a packed table")
    s.add_argument("--table", type=Path, default=TABLE_FILE)
    args = p.parse_args()
    if args.command == "build":
        build(args.work, args.workers, args.seed)
    elif args.command == "verify":
        verify(args.work, args.rows, args.seed)
    elif args.command == "pack":
        pack(args.work, args.out)
    else:
        show(args.table)


if __name__ == "__main__":
    main()

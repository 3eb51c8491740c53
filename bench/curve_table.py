"""The learning-curve table (docs/benchmarks.md part 4): bench/curve_table.yaml's 10-dimensional space,
sampled as backbones x fine-tuning settings, every configuration trained through every epoch of both
stages, with the objective, the four MAEs and the seconds of every epoch.

The design (`design`): 64 backbones, a scrambled Sobol sequence over the space's model.* and pretrain.*
keys (what the backbone key covers), each fine-tuned with 5 settings, consecutive points of a Sobol
sequence over the finetune.* keys: 320 curves from 64 pretrainings. 20 configurations (the first setting
of backbones 0-19) are trained again with seeds 1 and 2, their own pretraining included, to measure
training noise. Each backbone is pretrained once, through ecgtune's own backbone store
(`ecgtune.reuse.SharedPretraining`), and its other settings fine-tune the stored weights; `verify`
retrains rows from scratch, without the store, and must find every number identical.

    python -m bench.curve_table build --workers 1         # resumes; --max-jobs N builds a chunk and stops
    python -m bench.curve_table verify --rows 3           # recorded rows retrained from scratch
    python -m bench.curve_table pack                      # -> bench/data/curve_table.json.gz
    python -m bench.curve_table show

A finished row is a file of its own (`<work>/rows/<row id>.json`, written atomically), so an interrupted
build loses at most the fine-tuning runs in flight, and a backbone already in `<work>/backbones` is not
pretrained again. The seconds recorded here are those of a machine that may have been doing other work:
replays take each architecture's epoch times from `bench.epoch_timing`, measured on idle cores.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gzip
import json
import math
import multiprocessing
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.unit_cube import cube_keys, decode

REPO = Path(__file__).resolve().parents[1]
SPACE_SPEC = REPO / "bench" / "curve_table.yaml"
TABLE_FILE = REPO / "bench" / "data" / "curve_table.json.gz"
WORK = Path("runs/curve-table")
TABLE_FORMAT = 2
BACKBONES, FINETUNES_PER_BACKBONE = 64, 5
NOISE_CONFIGS, NOISE_SEEDS = 20, (1, 2)
SOBOL_SEEDS = {"backbone": 0, "finetune": 1}
# Per epoch, what the table keeps of a trial's result (the keys `ecgtune.stages` reports).
EPOCH_KEYS = (
    "epoch",
    "stage",
    "stage_epoch",
    "finetune_epoch",
    "objective",
    "diverged",
    "train_loss",
    "epoch_seconds",
    "train_seconds",
    "ptbxl_val_mae_hr",
    "ptbxl_val_mae_pr",
    "ptbxl_val_mae_qrs",
    "ptbxl_val_mae_qt",
)


@functools.cache
def load_space_spec(path: Path = SPACE_SPEC):
    """The table's space spec, read once per process (checking a spec builds its models: ~1 s)."""
    from ecgtune.spec import load_spec

    return load_spec(path)


def backbone_keys(space: Mapping[str, Any]) -> list[str]:
    """The coordinates the backbone key covers: the model and its pretraining."""
    return [k for k in cube_keys(space) if k.startswith(("model.", "pretrain."))]


def finetune_keys(space: Mapping[str, Any]) -> list[str]:
    return [k for k in cube_keys(space) if not k.startswith(("model.", "pretrain."))]


# ----------------------------------------------------------------------------------------- design


@dataclass(frozen=True)
class Row:
    """One curve to record: backbone b, fine-tuning setting f, training seed s."""

    backbone: int
    finetune: int
    seed: int
    config: dict[str, Any]

    @property
    def id(self) -> str:
        return f"b{self.backbone:02d}-f{self.finetune}-s{self.seed}"


def design(space: Mapping[str, Any]) -> list[list[Row]]:
    """The table's rows, grouped into jobs: one job per (backbone, seed), whose rows share a pretraining.

    Order: the first half of the backbones, the noise jobs, the second half. A Sobol sequence's first
    2^k points cover the cube evenly, so a build stopped part-way still has a space-filling table, and
    the noise measurement does not wait for the whole build.
    """
    from scipy.stats import qmc

    b_keys, f_keys = backbone_keys(space), finetune_keys(space)
    b_points = qmc.Sobol(len(b_keys), scramble=True, seed=SOBOL_SEEDS["backbone"]).random_base2(
        int(math.log2(BACKBONES))
    )
    n_settings = BACKBONES * FINETUNES_PER_BACKBONE
    f_points = qmc.Sobol(len(f_keys), scramble=True, seed=SOBOL_SEEDS["finetune"]).random_base2(
        math.ceil(math.log2(n_settings))
    )[:n_settings]

    def config(b: int, f: int) -> dict[str, Any]:
        values = {
            **decode(space, b_keys, b_points[b]),
            **decode(space, f_keys, f_points[b * FINETUNES_PER_BACKBONE + f]),
        }
        return {k: values[k] for k in cube_keys(space)}

    main = [[Row(b, f, 0, config(b, f)) for f in range(FINETUNES_PER_BACKBONE)] for b in range(BACKBONES)]
    noise = [[Row(b, 0, s, config(b, 0))] for b in range(NOISE_CONFIGS) for s in NOISE_SEEDS]
    half = BACKBONES // 2
    return main[:half] + noise + main[half:]


# ------------------------------------------------------------------------------------------ build


def _spec_for(base_json: str, row: Row):
    from ecgtune.spec import apply_params, spec_from_dict

    base = spec_from_dict(json.loads(base_json))
    spec = apply_params(base, row.config)
    return spec.model_copy(update={"seed": row.seed})


def _record(run, metrics_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row's epochs: pretraining as it was trained (the stored entry's metrics when it was reused, with
    the seconds it took there), then fine-tuning; non-finite numbers as null (JSON has no NaN)."""
    epochs = [dict(e) for e in run.pretrain_history] + [
        m for m in metrics_list if m.get("stage") == "finetune"
    ]
    out = []
    for e in epochs:
        kept = {k: e.get(k) for k in EPOCH_KEYS}
        for k, v in kept.items():
            if isinstance(v, float) and not math.isfinite(v):
                kept[k] = None
        out.append(kept)
    return out


def train_row(base_json: str, row: Row, store_dir: str | None, commit: str) -> dict[str, Any]:
    """Train one row through every epoch; with `store_dir`, its pretraining goes through a backbone store
    there (pretrained once per backbone, reused by the job's other rows)."""
    import torch

    from ecgtune.backbones import BackboneStore
    from ecgtune.models import build_model, flops_per_ecg
    from ecgtune.reuse import SharedPretraining
    from ecgtune.stages import TwoStageRun

    torch.set_num_threads(1)  # one row per core: a row's numbers do not depend on the machine's load
    spec = _spec_for(base_json, row)
    started = time.perf_counter()
    run = TwoStageRun(spec, device="cpu")
    shared = None
    if store_dir is not None:
        shared = SharedPretraining(
            run, BackboneStore(store_dir), holder=f"curve-table-{os.getpid()}",
            provenance={"trial": row.id, "sweep": "curve-table"},
        )  # fmt: skip
        shared.prepare()
    setup_seconds = time.perf_counter() - started
    metrics = []
    try:
        while not run.done:
            metrics.append(run.step())
            if shared is not None:
                shared.after_step()
    finally:
        if shared is not None:
            shared.close()
    model = build_model(spec.network_config())
    return {
        "id": row.id,
        "backbone": row.backbone,
        "finetune": row.finetune,
        "seed": row.seed,
        "config": row.config,
        "backbone_key": shared.key if shared is not None else None,
        "pretrained_here": shared is None or shared.origin == "pretrained",
        "parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_ecg": flops_per_ecg(model),
        "setup_seconds": setup_seconds,
        "git_commit": commit,  # the code that trained this row (a table may grow over several commits)
        "epochs": _record(run, metrics),
    }


def _write_row(rows_dir: Path, row: dict[str, Any]) -> None:
    tmp = rows_dir / f".{row['id']}.tmp"
    tmp.write_text(json.dumps(row))
    tmp.rename(rows_dir / f"{row['id']}.json")


def _run_job(args: tuple[list[Row], str, str, str]) -> list[str]:
    rows, base_json, work, commit = args
    rows_dir = Path(work) / "rows"
    done = []
    for row in rows:
        if (rows_dir / f"{row.id}.json").exists():
            continue
        _write_row(rows_dir, train_row(base_json, row, str(Path(work) / "backbones"), commit))
        done.append(row.id)
    return done


def read_rows(work: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((work / "rows").glob("*.json"))]


def _base_json(spec) -> str:
    """The spec with absolute store paths, so worker processes read the same stores without building."""
    from ecgtune.search import resolve_data

    return json.dumps(resolve_data(spec).model_dump(mode="json"))


def build(work: Path, workers: int, max_jobs: int | None) -> None:
    from ecgtune.data.demo import ensure_demo_data
    from ecgtune.progress import Progress

    spec = load_space_spec()
    ensure_demo_data([spec.data.pretrain, spec.data.finetune])
    jobs = design(spec.search.space)
    (work / "rows").mkdir(parents=True, exist_ok=True)
    done = {p.stem for p in (work / "rows").glob("*.json")}
    todo = [job for job in jobs if any(r.id not in done for r in job)][:max_jobs]
    n_rows = sum(len(j) for j in jobs)
    print(
        f"{n_rows} rows in {len(jobs)} jobs; {len(done)} done; {len(todo)} jobs to run on {workers} processes"
    )
    base_json, commit = _base_json(spec), git_commit()
    progress = Progress(len(todo), "curve table", unit="job")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=4) as pool:
        for _ in pool.imap_unordered(_run_job, [(job, base_json, str(work), commit) for job in todo]):
            progress.update(1)
    progress.close()


def verify(work: Path, n: int, seed: int) -> float:
    """Retrain `n` recorded rows from scratch (no backbone store, today's code) and print the largest
    difference in any objective, MAE or training loss: 0 means the table is reproducible, reused
    backbones included. Reads the rows of `work`, or, on a clone that has not built the table, the
    committed one."""
    rows = read_rows(work) or json.loads(gzip.decompress(TABLE_FILE.read_bytes()))["rows"]
    by_id = {r.id: r for job in design(load_space_spec().search.space) for r in job}
    base_json, commit = _base_json(load_space_spec()), git_commit()
    worst_all = 0.0
    for old in random.Random(seed).sample(rows, n):
        new = train_row(base_json, by_id[old["id"]], None, commit)
        worst = max(
            abs((a[k] or 0.0) - (b[k] or 0.0))
            for a, b in zip(old["epochs"], new["epochs"], strict=True)
            for k in EPOCH_KEYS
            if k in ("objective", "train_loss") or k.startswith("ptbxl_val_mae_")
        )
        worst_all = max(worst_all, worst)
        how = "pretrained itself" if old["pretrained_here"] else "fine-tuned a stored backbone"
        print(
            f"{old['id']} ({how}), recorded at {old['git_commit'][:8]}, retrained from scratch at "
            f"{commit[:8]}: largest difference over {len(new['epochs'])} epochs {worst:.3g}"
        )
    return worst_all


# ------------------------------------------------------------------------------------------- pack


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(spec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the table's numbers come from: the design, the stores' keys, the code, the machine."""
    import platform

    import torch

    from ecgtune import __version__
    from ecgtune.data.locate import require_store
    from ecgtune.data.store import ECGStore

    stores = {}
    for stage in ("pretrain", "finetune"):
        store = ECGStore(require_store(getattr(spec.data, stage)))
        p = store.provenance
        stores[stage] = {"key": store.key, "kind": p.get("kind"), "splits": p.get("splits")}
    return {
        "ecgtune_version": __version__,
        "git_commits": dict(Counter(r["git_commit"] for r in rows)),  # commit: rows
        "space_spec": SPACE_SPEC.read_text(),
        "design": {
            "backbones": BACKBONES,
            "finetunes_per_backbone": FINETUNES_PER_BACKBONE,
            "noise_configs": NOISE_CONFIGS,
            "noise_seeds": list(NOISE_SEEDS),
            "sobol_seeds": SOBOL_SEEDS,
        },
        "stores": stores,
        "demo_recipe": "ecgtune.data.demo: DeepFake GAN n=640 seed 0; simulated PTB-XL n=2200 seed 0 "
        "with label noise",
        "seconds": "epoch_seconds and train_seconds were measured while the build shared its 2 cores with "
        "other work: not a model's cost. Replays use bench.epoch_timing's idle-core times.",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads_per_row": 1,
        },
        "packed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def pack(work: Path, out: Path = TABLE_FILE) -> None:
    spec = load_space_spec()
    rows = read_rows(work)
    planned = sum(len(job) for job in design(spec.search.space))
    table = {
        "format": TABLE_FORMAT,
        "planned_rows": planned,
        "provenance": provenance(spec, rows),
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with gzip.open(tmp, "wt") as f:
        json.dump(table, f, separators=(",", ":"))
    tmp.replace(out)
    print(f"{out}: {len(rows)} of {planned} rows, {out.stat().st_size / 1e3:.0f} kB")


# ------------------------------------------------------------------------------------------- read


class CurveTable:
    """The packed table: rows by id, with their configurations and epochs."""

    def __init__(self, path: Path = TABLE_FILE):
        with gzip.open(path, "rt") as f:
            data = json.load(f)
        if data.get("format") != TABLE_FORMAT:
            raise ValueError(f"{path}: table format {data.get('format')!r}, expected {TABLE_FORMAT}")
        self.path = path
        self.provenance = data["provenance"]
        self.planned_rows = data["planned_rows"]
        self.rows = {r["id"]: r for r in data["rows"]}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows.values())

    def __len__(self) -> int:
        return len(self.rows)

    def main_rows(self) -> list[dict[str, Any]]:
        """The seed-0 rows: one curve per configuration of the design."""
        return [r for r in self if r["seed"] == 0]


def final_objective(row: Mapping[str, Any]) -> float:
    """A configuration's objective after its last epoch (inf when it diverged)."""
    last = row["epochs"][-1]
    return math.inf if last["objective"] is None or last["diverged"] else float(last["objective"])


def noise_sd(table: CurveTable) -> dict[str, float]:
    """Training noise: the SD over seeds 0, 1, 2 of the final objective, per configuration trained
    three times; its median and the range over configurations."""
    import numpy as np

    by_config: dict[int, list[float]] = {}
    for r in table:
        if r["finetune"] == 0 and r["backbone"] < NOISE_CONFIGS:
            by_config.setdefault(r["backbone"], []).append(final_objective(r))
    sds = [float(np.std(v, ddof=1)) for v in by_config.values() if len(v) == 3 and all(map(math.isfinite, v))]
    if not sds:
        return {}
    return {"configs": len(sds), "median_sd": float(np.median(sds)), "min_sd": min(sds), "max_sd": max(sds)}


def show(path: Path) -> None:
    table = CurveTable(path)
    main = table.main_rows()
    finals = sorted(final_objective(r) for r in main)
    diverged = sum(not math.isfinite(f) for f in finals)
    print(
        f"{path}: {len(table)} of {table.planned_rows} rows "
        f"({len(main)} seed-0 configurations, {diverged} diverged)"
    )
    ok = [f for f in finals if math.isfinite(f)]
    if ok:
        q = [ok[int(p * (len(ok) - 1))] for p in (0, 0.1, 0.5, 0.9, 1)]
        print("final objective: min {:.3f}, p10 {:.3f}, median {:.3f}, p90 {:.3f}, max {:.3f}".format(*q))
        print(
            f"within 1% of the best: {sum(f <= ok[0] * 1.01 for f in ok)}, "
            f"within 5%: {sum(f <= ok[0] * 1.05 for f in ok)}"
        )
    if noise := noise_sd(table):
        print(
            f"training noise (SD of the final objective over 3 seeds, {noise['configs']} configurations): "
            f"median {noise['median_sd']:.4f} (range {noise['min_sd']:.4f}-{noise['max_sd']:.4f})"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.curve_table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train the design's rows (resumable)")
    b.add_argument("--work", type=Path, default=WORK)
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--max-jobs", type=int, help="stop after this many jobs (a chunk)")
    v = sub.add_parser("verify", help="retrain recorded rows from scratch and compare")
    v.add_argument("--work", type=Path, default=WORK)
    v.add_argument("--rows", type=int, default=3)
    v.add_argument("--seed", type=int, default=0)
    k = sub.add_parser("pack", help="compress the rows with their provenance")
    k.add_argument("--work", type=Path, default=WORK)
    k.add_argument("--out", type=Path, default=TABLE_FILE)
    s = sub.add_parser("show", help="summarise a packed table")
    s.add_argument("--table", type=Path, default=TABLE_FILE)
    args = p.parse_args()
    if args.command == "build":
        build(args.work, args.workers, args.max_jobs)
    elif args.command == "verify":
        verify(args.work, args.rows, args.seed)
    elif args.command == "pack":
        pack(args.work, args.out)
    else:
        show(args.table)


if __name__ == "__main__":
    main()

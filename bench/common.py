"""Shared code of the benchmark scripts: alternating runner, statistics, tables, JSON, machine info,
the benchmark data set (one store + one `.asc` file per ECG) and the study-style input pipeline.

Rules every script follows (see bench/README-style docstrings of each script):
- every comparison is a ratio measured in the same run: the sides run alternately (A B A B ...) over
  several repeats, and the scripts quote medians (with the interquartile range) of the per-repeat rates
  and of the per-repeat ratios, so a slow spell of a shared machine hits both sides alike;
- each script prints a short table last and writes the full numbers as JSON (`--out`);
- `--quick` runs in seconds and only shows that the script works: its numbers are not measurements;
- each runs from the repository root as `python -m bench.<script>`, so it imports that checkout's ecgtune.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"

# ---------------------------------------------------------------------------------------- command line


def make_parser(script: str, doc: str | None) -> argparse.ArgumentParser:
    """The options every script has: --quick, --out, --repeats, --threads, --seed."""
    p = argparse.ArgumentParser(
        prog=f"python -m bench.{script}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="seconds: shows the script works, measures nothing")
    p.add_argument(
        "--out", type=Path, default=None, help=f"JSON of full numbers (default bench/results/{script}.json)"
    )
    p.add_argument("--repeats", type=int, default=None, help="alternating repeats per comparison")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice; 1 in --quick, which runs on busy machines)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def finish_args(args: argparse.Namespace, script: str, repeats_full: int, repeats_quick: int) -> None:
    """Fill defaults that depend on --quick, and set torch's thread count."""
    if args.out is None:
        args.out = RESULTS_DIR / f"{script}.json"
    if args.repeats is None:
        args.repeats = repeats_quick if args.quick else repeats_full
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is None and args.quick:
        args.threads = 1
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)


# ------------------------------------------------------------------------------------------ statistics


def stats(values: Sequence[float]) -> dict[str, float | int]:
    """Median, quartiles, IQR, min, max and count of `values` (NaN-free)."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    if v.size == 0:
        return {
            "n": 0,
            "median": float("nan"),
            "q1": float("nan"),
            "q3": float("nan"),
            "iqr": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
        }
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {
        "n": int(v.size),
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
        "iqr": float(q3 - q1),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-repeat ratios a_i / b_i of two sides measured in the same repeat."""
    return [a / b if b > 0 else float("inf") for a, b in zip(numerator, denominator, strict=True)]


# ---------------------------------------------------------------------------------- alternating runner


@dataclass
class Measurement:
    """One timed run of one side: `items` processed in `seconds`, and anything the side returned."""

    items: float
    seconds: float
    extra: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")


def alternate(
    sides: Mapping[str, Callable[[], float | tuple[float, dict[str, Any]]]],
    repeats: int,
    warmup: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[Measurement]]:
    """Run the sides in turn, A B C A B C ..., `repeats` times; return each side's measurements.

    A side is a callable that does its work and returns the number of items it processed (ECGs,
    records), or (items, extra) with extra facts to keep; an extra "timed_seconds" replaces the
    call's own duration (for sides that leave a start-up out of their timing). `warmup` runs every
    side once first, untimed (imports, allocator, thread pools, page cache), so no side pays
    first-run costs; scripts whose sides are expensive warm up with a smaller run of their own.
    """
    if warmup:
        for fn in sides.values():
            fn()
    out: dict[str, list[Measurement]] = {name: [] for name in sides}
    for r in range(repeats):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            result = fn()
            dt = time.perf_counter() - t0
            items, extra = result if isinstance(result, tuple) else (result, {})
            if "timed_seconds" in extra:  # the side timed its own steady part
                dt = extra["timed_seconds"]
            out[name].append(Measurement(float(items), dt, dict(extra)))
            if log is not None:
                log(f"  repeat {r + 1}/{repeats} {name}: {items:g} in {dt:.3f} s = {items / dt:.1f}/s")
    return out


def summarize_measurements(
    measurements: Mapping[str, list[Measurement]], reference: str | None = None
) -> dict[str, Any]:
    """Per side: rates (items/s) per repeat and their stats; with `reference`, per-repeat ratios
    side / reference and their stats."""
    out: dict[str, Any] = {}
    for name, ms in measurements.items():
        rates = [m.rate for m in ms]
        out[name] = {
            "rates": rates,
            "rate": stats(rates),
            "items": [m.items for m in ms],
            "seconds": [m.seconds for m in ms],
        }
        extras = [m.extra for m in ms if m.extra]
        if extras:
            out[name]["extra"] = extras
    if reference is not None:
        ref = out[reference]["rates"]
        for name in measurements:
            if name != reference:
                r = ratios(out[name]["rates"], ref)
                out[name][f"ratio_to_{reference}"] = {"per_repeat": r, **stats(r)}
    return out


# ---------------------------------------------------------------------------------------------- output


def fmt(x: float | int | None, digits: int = 1) -> str:
    """A number for a table: thousands separators for big ones, `digits` decimals for small ones."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    if isinstance(x, int) or abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def fmt_ratio(r: Mapping[str, float]) -> str:
    """'12.3x (11.9-12.8)': median and interquartile range of per-repeat ratios."""
    if r["n"] == 1:
        return f"{r['median']:.2f}x"
    return f"{r['median']:.2f}x ({r['q1']:.2f}-{r['q3']:.2f})"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table with aligned columns (numbers right, text left)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(_looks_numeric(r[i]) for r in cells) if cells else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rules = [("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric, strict=True)]
    sep = "|" + "|".join(rules) + "|"
    return "\n".join([line(list(headers)), sep, *(line(r) for r in cells)])


def _looks_numeric(s: str) -> bool:
    s = s.replace(",", "").replace("%", "").rstrip("x").split(" (")[0]
    try:
        float(s)
    except ValueError:
        return s == "-"
    return True


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> dict[str, Any]:
    """A table as data (for the JSON) with its title."""
    return {"title": title, "headers": list(headers), "rows": [[str(c) for c in r] for r in rows]}


def print_tables(tables: Sequence[Mapping[str, Any]], notes: Sequence[str] = ()) -> None:
    """Print `notes`, then each table (blank line, title, Markdown table): a run ends with a table."""
    for n in notes:
        print(n)
    for t in tables:
        print()
        if t.get("title"):
            print(t["title"])
        print(format_table(t["headers"], t["rows"]))
    sys.stdout.flush()


def write_json(
    path: Path,
    script: str,
    args: argparse.Namespace,
    results: Mapping[str, Any],
    tables: Sequence[Mapping[str, Any]],
) -> Path:
    """Write the full numbers: script, args, machine, results, tables (as printed). Returns the path."""
    payload = {
        "script": script,
        "quick": bool(args.quick),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(),
        "results": results,
        "tables": list(tables),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default, allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Measurement):
        return {"items": o.items, "seconds": o.seconds, "rate": o.rate, **o.extra}
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def log(msg: str) -> None:
    """Progress on stderr, so stdout ends with the table."""
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- machine info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores (all, and usable by this process), load, library versions, date, git commit."""
    import pandas as pd
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    try:
        git = ["git", "-C", str(REPO)]
        run = {"capture_output": True, "text": True, "timeout": 10}
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], **run)
        status = subprocess.run([*git, "status", "--porcelain"], **run)
        commit, dirty = commit.stdout.strip() or None, bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "load_average_1_5_15": load,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
    }


# ----------------------------------------------------------------------------------- benchmark data set


@dataclass
class BenchData:
    """N ECGs in both formats: an ecgtune store (all in the train split) and one `.asc` per ECG."""

    root: Path
    store_path: Path
    asc_paths: list[Path]
    targets: np.ndarray  # (n, 4) float32: hr bpm, pr, qrs, qt ms
    unique: int  # distinct ECGs; ECG i is distinct ECG i % unique


def gan_ecgs(n: int, seed: int = 0) -> np.ndarray:
    """`n` DeepFake ECGs from the package's GAN: int16 (n, 8, 5000) µV, as the published `.asc` hold."""
    from ecgtune.data.generate import generate_ecgs

    return np.concatenate(list(generate_ecgs(n, seed=seed, batch_size=min(n, 64), progress=False)))


def synthetic_signals(n: int, seed: int = 0) -> np.ndarray:
    """`n` ECG-like int16 (n, 8, 5000) µV signals without the GAN: a ~70 bpm spike train with a slower
    wave, baseline wander and noise, amplitudes up to ~±1.5 mV per lead. For machines without the
    `deepfake-ecg` package (the GPU image): compute does not depend on the values, and an `.asc` of
    these has numbers of as many digits as a GAN ECG's, so parsing costs the same."""
    rng = np.random.default_rng(seed)
    t = np.arange(5000) / 500.0
    out = np.empty((n, 8, 5000), np.int16)
    for i in range(n):
        hr = rng.uniform(55, 95) / 60.0  # beats per second
        phase = (t * hr + rng.uniform()) % 1.0
        beat = np.exp(-(((phase - 0.4) / 0.012) ** 2)) - 0.3 * np.exp(-(((phase - 0.7) / 0.05) ** 2))
        gain = rng.uniform(300, 1500, size=(8, 1))
        wander = 80 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
        out[i] = np.rint(gain * beat + wander + rng.normal(0, 15, size=(8, 5000)))
    return out


def write_bench_data(
    root: Path, n: int, unique: int = 64, seed: int = 0, source: str = "gan", asc: bool = True
) -> BenchData:
    """Write `n` ECGs to `root` as a store and as `.asc` files (`write_asc`, the published format).

    `unique` distinct ECGs are made and repeated (ECG i = distinct i % unique): the files are
    separate files with realistic content (parse cost depends on the digits), written in a
    fraction of the time 2048 `np.savetxt` calls would take. `source`: "gan" (the DeepFake GAN,
    needs `deepfake-ecg`) or "synthetic" (`synthetic_signals`). Labels are random plausible values.
    `asc=False` writes the store only.
    """
    import pandas as pd

    from ecgtune.data.deepfake import write_asc
    from ecgtune.data.store import StoreWriter

    if source not in ("gan", "synthetic"):
        raise ValueError(f"source must be 'gan' or 'synthetic', got {source!r}")
    root = Path(root)
    unique = max(1, min(unique, n))
    distinct = gan_ecgs(unique, seed) if source == "gan" else synthetic_signals(unique, seed)
    rng = np.random.default_rng(seed)
    targets = np.stack(
        [rng.uniform(50, 90, n), rng.uniform(120, 200, n), rng.uniform(70, 110, n), rng.uniform(350, 450, n)],
        axis=1,
    ).astype(np.float32)
    ids = [f"bench-{i:06d}" for i in range(n)]
    labels = pd.DataFrame({"record_id": ids, "patient_id": ids, "split": "train"})
    labels[["hr", "pr", "qrs", "qt"]] = targets
    store_path = root / "store"
    with StoreWriter(store_path, {"source": "bench", "key": f"bench-{source}-{n}-{unique}-{seed}"}) as w:
        for start in range(0, n, 256):
            idx = np.arange(start, min(start + 256, n))
            w.append(distinct[idx % unique], labels.iloc[idx])
    asc_dir = root / "asc"
    asc_dir.mkdir(parents=True, exist_ok=True)
    paths = [asc_dir / f"{i}.asc" for i in range(n)] if asc else []
    for i, p in enumerate(paths):
        if i < unique:
            write_asc(p, distinct[i])
        else:
            shutil.copyfile(paths[i % unique], p)
    return BenchData(root, store_path, paths, targets, unique)


# ------------------------------------------------------------------------------ study-style input pipeline


def study_dataset(paths: Sequence[Path], targets: np.ndarray, scale: float = 6000.0):
    """A torch Dataset as the study wrote it (python-scripts-resnet/ECGDataSet.py of
    cepdnaclk/e17-4yp-Comprehensive-ECG-analysis-with-Deep-Learning-on-GPU-accelerators): one `.asc`
    per sample read with pandas, to a tensor, float, divided by `scale`, transposed to (8, 5000).

    The study divided by 6000 (the GAN's tanh scale); 1000 gives millivolts as ecgtune's models
    expect. The cost is the same either way.
    """
    import pandas as pd
    import torch
    from torch.utils.data import Dataset

    class StudyAscDataset(Dataset):
        def __init__(self) -> None:
            self.paths = [str(p) for p in paths]
            self.y = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, index: int):
            ecg = pd.read_csv(self.paths[index], header=None, sep=" ")  # (5000, 8) DataFrame
            x = torch.tensor(ecg.values).float()  # int64 -> float32
            x = x / scale
            return x.t(), self.y[index]  # (5000, 8) -> (8, 5000)

    return StudyAscDataset()


def study_loader(dataset, batch_size: int, workers: int, seed: int = 0):
    """The study's DataLoader: shuffled, `workers` worker processes, default collate."""
    import torch
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, generator=g)


# ------------------------------------------------------------------------------------ one training step


def train_step(model, optimizer, x, y) -> float:
    """One step as ecgtune's Trainer takes it, without clipping or schedule: forward, L1 over
    labelled entries, backward, AdamW step. Returns the loss."""
    from ecgtune.train import masked_loss

    pred = model(x)
    loss = masked_loss(pred.float(), y, "l1")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def timed_steps(make_iter, model, optimizer, steps: int, device=None) -> tuple[int, dict[str, float]]:
    """A fresh iterator (its start-up and first batch timed apart), one untimed warm-up step, then `steps`
    training steps, each split into the wait for its batch (next()) and the step itself. With `device`,
    each batch is copied there as the study's loop did; `train_step` reads the loss, so each step ends
    when the device is done with it. Returns (ECGs trained, timings)."""

    def step(x, y) -> None:
        if device is not None:
            x, y = x.to(device), y.to(device)
        train_step(model, optimizer, x, y)

    t0 = time.perf_counter()
    it = make_iter()
    x, y = next(it)  # worker start-up and the first batch
    startup = time.perf_counter() - t0
    step(x, y)  # warm-up, untimed
    wait = compute = 0.0
    n = 0
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = next(it)
        t1 = time.perf_counter()
        step(x, y)
        t2 = time.perf_counter()
        wait += t1 - t0
        compute += t2 - t1
        n += len(x)
    del it  # shuts DataLoader workers down before another side runs
    return n, {
        "wait_s": wait,
        "compute_s": compute,
        "startup_s": startup,
        "wait_share": wait / (wait + compute) if steps else 0.0,
        "wait_ms_per_step": 1000 * wait / max(steps, 1),
        "compute_ms_per_step": 1000 * compute / max(steps, 1),
    }


# --------------------------------------------------------------------------- models from a search space

# Knobs whose *low* end is the larger model: a smaller patch means more tokens.
LARGER_WHEN_LOW = frozenset({"model.patch_size"})


def _is_size_knob(key: str) -> bool:
    return key.startswith("model.") and "dropout" not in key


def _mid_int(low: int, high: int, log: bool, step: int | None) -> int:
    mid = float(np.sqrt(low * high)) if log else (low + high) / 2
    step = step or 1
    return int(low + round((mid - low) / step) * step)


def space_params(spec, which: str) -> dict[str, Any]:
    """Search-space values of the model's size knobs for the 'smallest', 'median' or 'largest' model.

    smallest = every size knob at the end of its range that gives the smaller model (the low end,
    except patch size, where it is the high end); largest = the other end; median = the median of
    the search distribution (geometric mean for log ranges, the middle choice of a categorical).
    Dropouts, learning rates and other non-size knobs are left at the spec's values; `same_as`
    knobs follow their target (apply_params fills them); a `divides` knob picks among the choices
    that divide its parent's chosen value.
    """
    from ecgtune.sampler import fixed_values

    if which not in ("smallest", "median", "largest"):
        raise ValueError(f"which must be smallest, median or largest, got {which!r}")
    space = spec.search.space
    fixed = fixed_values(spec)
    chosen: dict[str, Any] = {}
    # Parents before the knobs that must divide them.
    for key in sorted(space, key=lambda k: space[k].divides is not None):
        dist = space[key]
        if not _is_size_knob(key) or dist.type == "same_as":
            continue
        if dist.type in ("int", "float"):
            lo, hi = dist.low, dist.high
            if which == "median":
                value = (
                    _mid_int(int(lo), int(hi), dist.log, dist.step)
                    if dist.type == "int"
                    else (float(np.sqrt(lo * hi)) if dist.log else (lo + hi) / 2)
                )
                chosen[key] = value
                continue
            ends = [lo, hi]
        else:
            choices = list(dist.choices or [])
            if dist.divides:
                parent = chosen.get(dist.divides, fixed.get(dist.divides))
                choices = [c for c in choices if parent % c == 0]
            ends = sorted(choices)
            if which == "median":
                chosen[key] = ends[len(ends) // 2]
                continue
        small_first = key not in LARGER_WHEN_LOW
        pick_low = (which == "smallest") == small_first
        chosen[key] = ends[0] if pick_low else ends[-1]
    return chosen


def space_model_config(spec_path: Path, which: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config for `build_model`, the search-space values used) of a shipped sweep spec."""
    from ecgtune.spec import apply_params, load_spec

    spec = load_spec(spec_path)
    params = space_params(spec, which)
    trial = apply_params(spec, params)
    config = {"name": trial.model.name, **trial.model.params, "num_outputs": len(trial.targets)}
    return config, params


def model_flops(config: Mapping[str, Any]) -> int:
    """flops_per_ecg of a model config, counted on the meta device: no memory, no arithmetic (the
    largest ResNet of resnet_widths does ~800 GFLOP per ECG). Same count as on the CPU."""
    import torch

    from ecgtune.models import build_model, flops_per_ecg

    with torch.device("meta"):
        model = build_model(dict(config))
    return flops_per_ecg(model)

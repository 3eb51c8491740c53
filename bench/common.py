"""Shared code of the benchmark scripts: command line, alternating runner, statistics, tables, JSON and
machine info. The benchmark data set is in bench/bench_data.py, the study-style input pipeline in
bench/study_pipeline.py, models picked from a search space in bench/space_models.py.

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

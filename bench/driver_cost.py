"""The driver at scale (docs/benchmarks.md part 4): what the sweep driver costs per trial as a sweep grows
to thousands of trials, and how much of it is TPE's suggestion.

TPE + ASHA as the table's spec ships it, through ecgtune's driver (`build_tuner`: real Tune, ecgtune's
searcher and ASHA, the console and dashboard callbacks of a real sweep), on the surrogate with no sleep:
every second of wall time is the driver's or Ray's. The first result of each trial marks when it
started; the wall time between the starts of trials i and i + 100 over 100 is the driver's time per trial
at that size. TPE's suggestion time is timed inside the searcher.

    python -m bench.replay driver-cost --trials 5000      # -> bench/data/driver_cost.json
    python -m bench.replay driver-cost --trials 5000 --history 100000   # TPE reading every trial
    python -m bench.replay driver-cost --trials 5000 --memory   # the study in memory, not in a journal
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecgtune.backbone_search import BackboneSharingSearch

REPO = Path(__file__).resolve().parents[1]
# Committed; `--history N` writes driver_cost-history<N>.json beside it.
OUT = REPO / "bench" / "data" / "driver_cost.json"
SUGGEST_SECONDS: list[float] = []  # in the driver process


class TimedSearch(BackboneSharingSearch):
    """ecgtune's searcher (sharing off unless the spec asks), timing each suggestion."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            return super().suggest(trial_id)
        finally:
            SUGGEST_SECONDS.append(time.perf_counter() - started)


def driver_cost(trials: int, concurrency: int, history: int | None = None, out: Path = OUT,
                memory: bool = False) -> dict[str, Any]:  # fmt: skip
    from bench.replay import full_trial_seconds, init_ray, run_strategy

    fte = full_trial_seconds()
    setting = {"blackbox": "surrogate", "table": None, "time_scale": 0.0}
    init_ray()
    SUGGEST_SECONDS.clear()
    started = time.perf_counter()
    r = run_strategy(
        "tpe_asha", 0, None, setting, concurrency, num_samples=trials, searcher_class=TimedSearch,
        quiet=False, keep_events=True, tpe_history=history, journal=not memory,
    )  # fmt: skip
    wall = time.perf_counter() - started
    first_result: dict[str, float] = {}
    for event in r["events"]:
        first_result.setdefault(event[0], event[-1])
    starts = sorted(first_result.values())
    blocks = []
    for lo in range(0, len(starts) - 1, 100):
        hi = min(lo + 100, len(starts) - 1)
        blocks.append({
            "trials": f"{lo + 1}-{hi + 1}",
            "driver_ms_per_trial": 1e3 * (starts[hi] - starts[lo]) / (hi - lo),
            "suggest_ms_median": 1e3 * float(np.median(SUGGEST_SECONDS[lo:hi])),
        })  # fmt: skip
    result = {
        "trials": len(starts),
        "wall_s": wall,
        "fte_seconds": fte,
        "tpe_history": history,
        "study": "in memory" if memory else "journal file (as sweeps keep it)",
        "suggest_total_s": float(sum(SUGGEST_SECONDS)),
        "blocks": blocks,
    }
    if (history is not None or memory) and out == OUT:
        tag = (f"-history{history}" if history is not None else "") + ("-memory" if memory else "")
        out = OUT.with_name(f"driver_cost{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for b in blocks[:: max(1, len(blocks) // 20)]:
        print(f"trials {b['trials']:>11}: {b['driver_ms_per_trial']:6.0f} ms of driver wall time per trial, "
              f"TPE suggestion {b['suggest_ms_median']:5.1f} ms (median)")  # fmt: skip
    print(f"{len(starts)} trials in {wall:.0f} s; TPE suggestions {result['suggest_total_s']:.0f} s of it")
    return result

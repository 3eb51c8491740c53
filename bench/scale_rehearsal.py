"""Scale rehearsal (docs/benchmarks.md part 6): convert a PTB-XL-size tree and a 20,000-file DeepFake
`.asc` set with the real converters, timing each step and sampling the memory it holds.

1. `ecgtune data simulate -n N` writes a PTB-XL-format tree (records500/ + records100/ WFDB, the
   database CSV, PTB-XL+ 12SL features); `ecgtune data ptbxl` converts it.
2. A DeepFake-format set in the 121,977-ECG layout (one folder of `<patid>.asc`, 5000 rows x 8
   integer microvolt columns, and the MUSE ground-truth CSV): `unique` simulated ECGs written with
   `write_asc` and copied to N files (separate files with realistic digits; writing 20,000 with
   np.savetxt would take longer than converting them); `ecgtune data deepfake` converts it.

Each command runs as its own process; its peak memory is the largest sum of the resident memory of
that process and all its descendants (the conversion pool's workers), sampled every 0.1 s. Each
converter runs on a tenth of the records and on all of them: peak memory must not grow with the
number of records (stores are written in chunks).

    python -m bench.scale_rehearsal                    # 21,799 PTB-XL records, 20,000 .asc files
    python -m bench.scale_rehearsal --quick            # 400 of each: shows the script works
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from bench import common

SCRIPT = "scale_rehearsal"


def run_measured(cmd: list[str]) -> dict[str, float]:
    """Run `cmd`; its wall time and peak resident memory (process tree, sampled every 0.1 s)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    common.log(out.strip().splitlines()[-1] if out.strip() else "")
    return {"seconds": seconds, "peak_mib": peak / 2**20}


def ecgtune(*args: str) -> list[str]:
    return [sys.executable, "-m", "ecgtune", *args]


def write_deepfake_set(root: Path, n: int, unique: int, seed: int) -> None:
    """n `.asc` files and their ground-truth CSV in the published single-folder layout: `unique`
    simulated ECGs (exact labels; RR written as the mean RR the heart rate comes from), repeated."""
    import pandas as pd

    from ecgtune.data.deepfake import GROUND_TRUTH_FILE, write_asc
    from ecgtune.data.simulate import draw_parameters, render

    params = draw_parameters(unique, np.random.default_rng(seed))
    signals = np.round(render(params) * 1000).astype(np.int16)  # (unique, 8, 5000) µV, I, II, V1-V6
    folder = root / "from_006_chck_2500_150k_filtered_all_normals_121977"
    folder.mkdir(parents=True)
    for i in range(n):
        path = folder / f"{i}.asc"
        if i < unique:
            write_asc(path, signals[i])
        else:
            shutil.copyfile(folder / f"{i % unique}.asc", path)
    labels = params.labels.iloc[np.arange(n) % unique].reset_index(drop=True)
    pd.DataFrame(
        {
            "TestID": np.arange(n),
            "patid": np.arange(n),
            "avgrrinterval": labels["rr_ms"].round(),
            "pr": labels["pr"].round(),
            "qrs": labels["qrs"].round(),
            "qt": labels["qt"].round(),
        }
    ).to_csv(root / GROUND_TRUTH_FILE, index=False)


def main() -> None:
    p = common.make_parser(SCRIPT, __doc__)
    p.add_argument("--ptbxl", type=int, default=21_799, help="records in the PTB-XL-format tree")
    p.add_argument("--asc", type=int, default=20_000, help=".asc files in the DeepFake-format set")
    p.add_argument("--unique", type=int, default=500, help="distinct ECGs among the .asc files")
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir)")
    args = p.parse_args()
    common.finish_args(args, SCRIPT, repeats_full=1, repeats_quick=1)
    if args.quick:
        args.ptbxl, args.asc, args.unique = 400, 400, 50
    work = Path(tempfile.mkdtemp(prefix="ecgtune-scale-", dir=args.work))
    results: dict[str, dict] = {}
    try:
        common.log(f"simulating a PTB-XL-format tree of {args.ptbxl} records")
        tree = work / "ptbxl-tree"
        results["simulate_ptbxl"] = {
            "n": args.ptbxl,
            **run_measured(
                ecgtune("data", "simulate", "-o", str(tree), "-n", str(args.ptbxl), "--seed", "0")
            ),
        }
        for n in (args.ptbxl // 10, args.ptbxl):
            common.log(f"converting {n} PTB-XL-format records")
            out = work / f"ptbxl-store-{n}"
            m = run_measured(ecgtune("data", "ptbxl", str(tree), "-o", str(out), "--limit", str(n)))
            results[f"convert_ptbxl_{n}"] = {"n": n, **m, "records_per_s": n / m["seconds"]}
            shutil.rmtree(out)
        common.log(f"writing {args.asc} DeepFake-format .asc files ({args.unique} distinct)")
        asc_root = work / "deepfake-set"
        started = time.perf_counter()
        write_deepfake_set(asc_root, args.asc, args.unique, seed=1)
        results["write_asc_set"] = {"n": args.asc, "seconds": time.perf_counter() - started}
        for n in (args.asc // 10, args.asc):
            common.log(f"converting {n} .asc files")
            out = work / f"deepfake-store-{n}"
            m = run_measured(ecgtune("data", "deepfake", str(asc_root), "-o", str(out), "--limit", str(n)))
            results[f"convert_deepfake_{n}"] = {"n": n, **m, "records_per_s": n / m["seconds"]}
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        [
            name,
            r["n"],
            f"{r['seconds']:.0f}",
            common.fmt(r.get("records_per_s")),
            common.fmt(r.get("peak_mib"), 0),
        ]
        for name, r in results.items()
    ]
    table = common.table(["step", "records", "seconds", "records/s", "peak MiB"], rows, "scale rehearsal")
    common.write_json(args.out, SCRIPT, args, {"results": results, "cpus": os.cpu_count()}, [table])
    common.print_tables([table])
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

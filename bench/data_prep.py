"""Data preparation (benchmarks part 6, issue 2's report): generating, labelling, converting and reading ECGs.

1. Generation, ECGs/s: ecgtune's `generate_ecgs` (the package's Pulse2Pulse GAN and weights, batched
   noise, inference mode) at batch sizes 1, 16 and 64, vs the `deepfake-ecg` package's own
   `deepfakeecg.generate(num, out_dir)`, which loads its weights, then generates and writes one `.asc`
   at a time (autograd on, `np.savetxt`). ecgtune's side yields int16 arrays (a store write of them is
   a memory copy); the package's side includes its file writing, since that is how it delivers ECGs.
   The four sides run in turn (package, b1, b16, b64, package, ...); ratios are per round.
2. Labelling, ECGs/s, with the default labeller (`LabelPool("neurokit2")`) in 1 and in 2 worker
   processes, alternating; the pools are started (and warmed, concurrently) before timing, their
   first use (neurokit2 import, worker start) reported apart. Also the failure rate and the label
   distributions (median, 5-95 %) of the generated ECGs.
3. PTB-XL-format conversion, records/s: N generated ECGs written as PTB-XL WFDB records (12 leads:
   III, aVR, aVL, aVF derived from I and II) with `ptbxl_database.csv` and a PTB-XL+ 12SL feature
   table (`write_record`, `write_database`, `write_features`), then `convert_ptbxl(rebuild=True)`
   with workers=1 and workers=2, alternating (records are read in chunks of 256, so 2 workers only
   help from 257 records on).
4. Reading, records/s, alternating: the store one record at a time (int16 memory map -> float32 mV),
   the store gathered 256 at a time, `.asc` with pandas (`pd.read_csv(sep=" ", header=None)`), and
   WFDB with `wfdb.rdsamp`, all over the same ECGs in the same shuffled order (page cache warm).

    python -m bench.data_prep                 # 256 generated per side, 128 labelled, 1024 converted
    python -m bench.data_prep --quick         # a few ECGs per step: seconds, shows the script works
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench import common

SCRIPT = "data_prep"


# ---------------------------------------------------------------------------------------- generation


def package_generate(n: int, out_dir: Path) -> int:
    """`deepfakeecg.generate(n, out_dir)`, the package's writer, with its progress bar silenced."""
    import deepfakeecg

    module = sys.modules["deepfakeecg.deepfakeecg"]
    module.tqdm = lambda iterable, *a, **k: iterable  # its tqdm would print to stderr
    deepfakeecg.generate(n, str(out_dir))
    return n


def bench_generation(args, tmp: Path) -> tuple[dict, dict]:
    from ecgtune.data.generate import generate_ecgs, load_generator

    model = load_generator("cpu")
    pkg_dir = tmp / "package-asc"
    pkg_dir.mkdir()
    sides = {"package generate()": lambda: package_generate(args.n_package, pkg_dir)}
    for b in args.gen_batch_sizes:

        def ecgtune_side(b: int = b) -> int:
            n = 0
            for chunk in generate_ecgs(args.n_gen, seed=args.seed, batch_size=b, model=model, progress=False):
                n += len(chunk)
            return n

        sides[f"ecgtune batch {b}"] = ecgtune_side
    common.log("generation:")
    # Warm-up: one small run of each (weights, thread pools, allocator).
    package_generate(1, pkg_dir)
    for b in args.gen_batch_sizes:
        list(generate_ecgs(min(b, args.n_gen), seed=args.seed, batch_size=b, model=model, progress=False))
    m = common.alternate(sides, args.repeats, log=common.log)
    s = common.summarize_measurements(m, reference="package generate()")
    rows = []
    for name in sides:
        r = s[name].get("ratio_to_package generate()")
        per = args.n_package if name.startswith("package") else args.n_gen
        rows.append(
            [name, per, common.fmt(s[name]["rate"]["median"], 1), common.fmt_ratio(r) if r else "1.00x"]
        )
    t = common.table(
        ["generator", "ECGs per run", "ECG/s", "vs package (IQR)"],
        rows,
        title=f"generation (GAN, CPU), median of {args.repeats} round(s){_quick(args)}",
    )
    return {"n_gen": args.n_gen, "n_package": args.n_package, **s}, t


# ----------------------------------------------------------------------------------------- labelling


def bench_labelling(args, signals: np.ndarray) -> tuple[dict, list[dict]]:
    from ecgtune.data.labels import LabelPool
    from ecgtune.targets import TARGET_NAMES

    x = signals[: args.n_label]
    pools = {w: LabelPool("neurokit2", workers=w, chunk_size=args.label_chunk) for w in (1, 2)}
    startup: dict[int, float] = {}

    def warm(w: int) -> None:
        """First use: imports neurokit2 here (1 worker) or starts the forkserver and its workers (2)."""
        t0 = time.perf_counter()
        pools[w].label(signals[: 2 * w], progress=False)
        startup[w] = time.perf_counter() - t0

    # Both warm-ups at once: the 2-worker pool's processes start while this one imports neurokit2.
    starter = threading.Thread(target=warm, args=(2,))
    starter.start()
    warm(1)
    starter.join()
    last = {}

    def side(w: int):
        def run() -> tuple[int, dict]:
            labels, counts = pools[w].label(x, progress=False)
            last[w] = (labels, counts)
            return len(x), {"labelled": counts["labelled"], "errors": counts["errors"]}

        return run

    common.log("labelling:")
    try:
        m = common.alternate({"1 worker": side(1), "2 workers": side(2)}, args.repeats, log=common.log)
    finally:
        for p in pools.values():
            p.close()
    s = common.summarize_measurements(m, reference="1 worker")
    labels, counts = last[1]
    n = counts["n"]
    dist = {}
    for t in TARGET_NAMES:
        v = labels[t].dropna().to_numpy()
        q = np.percentile(v, [5, 50, 95]) if len(v) else [np.nan] * 3
        dist[t] = {"n": int(len(v)), "p5": float(q[0]), "median": float(q[1]), "p95": float(q[2])}
    failure = {
        "ecgs": n,
        "all_four_labels": counts["labelled"],
        "failure_rate": 1 - counts["labelled"] / n if n else float("nan"),
        "failed": counts["failed"],
        "dropped_implausible": counts["dropped"],
        "errors": counts["errors"],
        "error_examples": counts["error_examples"],
    }
    rows = [
        [
            name,
            common.fmt(s[name]["rate"]["median"], 2),
            f"{1000 / s[name]['rate']['median']:.0f}",
            common.fmt_ratio(s[name]["ratio_to_1 worker"]) if name != "1 worker" else "1.00x",
            f"{startup[1 if name == '1 worker' else 2]:.1f}",
        ]
        for name in ("1 worker", "2 workers")
    ]
    t1 = common.table(
        ["labeller neurokit2", "ECG/s", "ms/ECG", "vs 1 worker (IQR)", "first use s"],
        rows,
        title=(
            f"labelling {len(x)} generated ECGs, median of {args.repeats} alternating repeat(s); "
            f"complete (all four plausible): {counts['labelled']}/{n} "
            f"= {100 * (1 - failure['failure_rate']):.0f}%"
            f"{_quick(args)}"
        ),
    )
    units = {"hr": "bpm", "pr": "ms", "qrs": "ms", "qt": "ms"}
    rows = [
        [
            t,
            units[t],
            dist[t]["n"],
            common.fmt(dist[t]["median"], 0),
            common.fmt(dist[t]["p5"], 0),
            common.fmt(dist[t]["p95"], 0),
            counts["failed"][t],
            counts["dropped"][t],
        ]
        for t in TARGET_NAMES
    ]
    t2 = common.table(
        ["label", "unit", "n", "median", "p5", "p95", "not found", "implausible"],
        rows,
        title=f"label distribution of {n} generated ECGs (neurokit2){_quick(args)}",
    )
    return {"n_label": len(x), "startup_s": startup, "failure": failure, "distribution": dist, **s}, [t1, t2]


# ---------------------------------------------------------------------------------------- conversion


def twelve_leads_mv(signals_uv: np.ndarray) -> np.ndarray:
    """(n, 8, 5000) int16 µV, leads I II V1-V6 -> (n, 12, 5000) float mV in PTB-XL order:
    III = II - I, aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2 (Einthoven, Goldberger)."""
    mv = signals_uv.astype(np.float64) / 1000.0
    i, ii = mv[:, 0], mv[:, 1]
    limb = np.stack([i, ii, ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2], axis=1)
    return np.concatenate([limb, mv[:, 2:]], axis=1)


def write_ptbxl(root: Path, signals: np.ndarray, seed: int) -> float:
    """PTB-XL 1.0.3 layout with PTB-XL+ 12SL features; returns seconds taken."""
    import pandas as pd

    from ecgtune.data.ptbxl_format import write_database, write_features, write_record

    t0 = time.perf_counter()
    n = len(signals)
    ids = np.arange(1, n + 1)
    for ecg_id, sig in zip(ids, twelve_leads_mv(signals), strict=True):
        write_record(root, int(ecg_id), sig)
    rows = pd.DataFrame(
        {
            "ecg_id": ids,
            "patient_id": 10000 + ids,
            "scp_codes": [{"NORM": 100.0, "SR": 0.0}] * n,
            "strat_fold": (ids - 1) % 10 + 1,
        }
    )
    write_database(root, rows)
    rng = np.random.default_rng(seed)
    feats = pd.DataFrame(
        {
            "ecg_id": ids,
            "hr": rng.uniform(50, 90, n),
            "pr": rng.uniform(120, 200, n),
            "qrs": rng.uniform(70, 110, n),
            "qt": rng.uniform(350, 450, n),
        }
    )
    write_features(root / "features" / "12sl_features.csv", feats, source="12sl", seed=seed)
    return time.perf_counter() - t0


def bench_conversion(args, tmp: Path, signals: np.ndarray) -> tuple[dict, dict, Path]:
    from ecgtune.data.ptbxl import convert_ptbxl

    root = tmp / "ptbxl-format"
    x = signals[: args.n_ptbxl]
    write_s = write_ptbxl(root, x, args.seed)

    def side(w: int):
        def run() -> tuple[int, dict]:
            store, reused = convert_ptbxl(root, tmp / f"ptbxl-store-w{w}", rebuild=True, workers=w)
            if reused:
                raise RuntimeError("convert_ptbxl reused a store despite rebuild=True")
            return len(store), {}

        return run

    common.log("PTB-XL conversion:")
    side(1)()  # warm-up: imports, page cache of the records
    m = common.alternate({"workers=1": side(1), "workers=2": side(2)}, args.repeats, log=common.log)
    s = common.summarize_measurements(m, reference="workers=1")
    rows = [
        ["write (WFDB + database + features)", len(x), common.fmt(len(x) / write_s, 0), "-"],
        *[
            [
                f"convert_ptbxl {name}",
                len(x),
                common.fmt(s[name]["rate"]["median"], 0),
                common.fmt_ratio(s[name]["ratio_to_workers=1"]) if name != "workers=1" else "1.00x",
            ]
            for name in ("workers=1", "workers=2")
        ],
    ]
    t = common.table(
        ["step", "records", "records/s", "vs workers=1 (IQR)"],
        rows,
        title=f"PTB-XL-format conversion (rebuild=True), median of {args.repeats} repeat(s){_quick(args)}",
    )
    return {"n_records": len(x), "write_seconds": write_s, **s}, t, root


# -------------------------------------------------------------------------------------------- reading


def bench_reads(args, tmp: Path, signals: np.ndarray, ptbxl_root: Path) -> tuple[dict, dict]:
    import pandas as pd
    import wfdb

    from ecgtune.data.deepfake import write_asc
    from ecgtune.data.ptbxl_format import PTBXL_LEADS, record_name
    from ecgtune.data.store import ECGStore, StoreWriter
    from ecgtune.targets import LEADS

    n = min(args.n_read, len(signals), args.n_ptbxl)
    x = signals[:n]
    ids = [str(i) for i in range(1, n + 1)]
    labels = pd.DataFrame({"record_id": ids, "patient_id": ids, "split": "train"})
    labels[["hr", "pr", "qrs", "qt"]] = np.nan
    with StoreWriter(tmp / "read-store", {"source": "bench", "key": f"read-{n}"}) as w:
        w.append(x, labels)
    mm = ECGStore(tmp / "read-store").signals("train")
    asc = [tmp / "read-asc" / f"{i}.asc" for i in range(n)]
    asc[0].parent.mkdir()
    for p, sig in zip(asc, x, strict=True):
        write_asc(p, sig)
    wfdb_paths = [str(ptbxl_root / record_name(i + 1)) for i in range(n)]
    eight = [PTBXL_LEADS.index(lead.upper()) for lead in LEADS]
    order = np.random.default_rng(args.seed).permutation(n)

    def store_one() -> int:
        for i in order:
            np.asarray(mm[i]).astype(np.float32) * np.float32(1e-3)  # (8, 5000) int16 µV -> float32 mV
        return n

    def store_gather() -> int:
        for s in range(0, n, 256):
            idx = np.sort(order[s : s + 256])
            mm[idx].astype(np.float32) * np.float32(1e-3)  # (b, 8, 5000)
        return n

    def asc_pandas() -> int:
        for i in order:
            pd.read_csv(asc[i], sep=" ", header=None).to_numpy(np.float32).T / 1000.0  # (8, 5000) mV
        return n

    def wfdb_rdsamp() -> int:
        for i in order:
            sig, _ = wfdb.rdsamp(wfdb_paths[i])  # (5000, 12) float64 mV
            sig[:, eight].T.astype(np.float32)
        return n

    sides = {
        "store, one record": store_one,
        "store, gathered 256": store_gather,
        ".asc, pandas": asc_pandas,
        "WFDB, wfdb.rdsamp": wfdb_rdsamp,
    }
    # Same values from every reader (the WFDB records hold the same µV).
    i = int(order[0])
    ref = mm[i].astype(np.float32) / 1000.0
    same = {
        ".asc": bool(
            np.allclose(pd.read_csv(asc[i], sep=" ", header=None).to_numpy(np.float32).T / 1000, ref)
        ),
        "wfdb": bool(np.allclose(wfdb.rdsamp(wfdb_paths[i])[0][:, eight].T, ref, atol=1e-6)),
    }
    common.log("reading:")
    m = common.alternate(sides, args.repeats, warmup=True, log=common.log)
    s = common.summarize_measurements(m)
    ref_rates = s["store, one record"]["rates"]
    for name in sides:
        r = common.ratios(ref_rates, s[name]["rates"])
        s[name]["store_one_record_over_this"] = {"per_repeat": r, **common.stats(r)}
    rows = [
        [
            name,
            common.fmt(s[name]["rate"]["median"], 0),
            common.fmt_ratio(s[name]["store_one_record_over_this"]),
        ]
        for name in sides
    ]
    t = common.table(
        ["reader", "records/s", "store one-record / this (IQR)"],
        rows,
        title=(
            f"reading {n} ECGs as float32 mV (8, 5000), shuffled order, median of {args.repeats} alternating "
            f"repeat(s); same values: {same}{_quick(args)}"
        ),
    )
    return {"n_read": n, "same_values": same, **s}, t


def _quick(args) -> str:
    return " [QUICK: not a measurement]" if args.quick else ""


def main(argv: list[str] | None = None) -> None:
    p = common.make_parser(SCRIPT, __doc__)
    p.add_argument("--n-gen", type=int, default=None, help="ECGs per ecgtune generation run (256; quick 8)")
    p.add_argument(
        "--n-package", type=int, default=None, help="ECGs per package generate() run (32; quick 2)"
    )
    p.add_argument("--gen-batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--n-label", type=int, default=None, help="ECGs labelled per run (128; quick 4)")
    p.add_argument(
        "--label-chunk", type=int, default=None, help="ECGs per labelling task (8, the default; quick 2)"
    )
    p.add_argument("--n-ptbxl", type=int, default=None, help="records converted (1024; quick 12)")
    p.add_argument("--n-read", type=int, default=None, help="records read per run (512; quick 12)")
    args = p.parse_args(argv)
    common.finish_args(args, SCRIPT, repeats_full=3, repeats_quick=1)
    q = args.quick
    args.n_gen = args.n_gen or (8 if q else 256)
    args.n_package = args.n_package or (2 if q else 32)
    args.n_label = args.n_label or (4 if q else 128)
    args.label_chunk = args.label_chunk or (2 if q else 8)
    args.n_ptbxl = args.n_ptbxl or (12 if q else 1024)
    args.n_read = args.n_read or (12 if q else 512)

    from ecgtune.data.generate import generate_ecgs

    results: dict = {}
    tables = []
    with tempfile.TemporaryDirectory(prefix="ecgtune-bench-prep-") as td:
        tmp = Path(td)
        results["generation"], t = bench_generation(args, tmp)
        tables.append(t)
        n_corpus = max(args.n_label, args.n_ptbxl, args.n_read, 4)
        common.log(f"generating {n_corpus} ECGs for labelling, conversion and reading ...")
        signals = np.concatenate(list(generate_ecgs(n_corpus, seed=args.seed + 1, progress=False)))
        results["labelling"], ts = bench_labelling(args, signals)
        tables += ts
        results["conversion"], t, ptbxl_root = bench_conversion(args, tmp, signals)
        tables.append(t)
        results["reading"], t = bench_reads(args, tmp, signals, ptbxl_root)
        tables.append(t)
    out = common.write_json(args.out, SCRIPT, args, results, tables)
    common.print_tables(tables, notes=[f"wrote {out}"])


if __name__ == "__main__":
    main()

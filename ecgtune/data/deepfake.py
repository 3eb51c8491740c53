"""The published DeepFake ECG dataset (Thambawita et al., Sci Rep 11:21896, 2021), read as distributed.

Signals: one `<patid>.asc` text file per ECG, 5000 rows x 8 space-separated
integer columns = 10 s at 500 Hz of leads I, II, V1-V6 (`LEADS`). Values are
microvolts: the Pulse2Pulse generator's tanh output x 6000, truncated with
int() and written with `np.savetxt(fmt="%i")` (deepfake-ecg 1.1.2,
`deepfakeecg.generate`), so |value| <= 6000 in practice.

Labels: GE MUSE 12SL measurements of every ECG (`TestID`, `patid`,
`avgrrinterval`, `VentRate`, `AtrialRate`, `pr`, `qrs`, `qt`, `qtcf`, axes,
onsets/offsets, per-lead amplitudes; times in ms). ecgtune keeps
hr = 60000 / avgrrinterval (bpm), pr, qrs, qt (ms).

Two layouts are published:

* the 121,977-ECG set: `filtered_all_normals_121977_ground_truth.csv` and one
  folder of `.asc` files (`from_006_chck_2500_150k_filtered_all_normals_121977/`
  in the release; any single folder under the root, or the root itself, is
  accepted). No split is published: ecgtune assigns one with
  `assign_split_by_hash` on patid, so a given ECG always lands in the same split.
* the small set: `train.csv`, `validate.csv`, `test.csv` beside `train/`,
  `validation/`, `test/` folders. Its published split is used as is.

DeepFake ECGs are not linked to any person, so each ECG is its own "patient"
(patient_id = record_id = patid) and a hash split on patid is leak-free.
"""

from __future__ import annotations

import errno
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecgtune.data.checks import check_no_flat_lead, drop_implausible, hr_from_rr, label_counts
from ecgtune.data.convert import csv_columns, parse_numbers, read_chunks, read_csv_text
from ecgtune.data.errors import LabelFormatError, RecordFormatError
from ecgtune.data.store import (
    SPLITS,
    ECGStore,
    SkipTally,
    StoreWriter,
    append_readable,
    assign_split_by_hash,
    claim_store_path,
    content_key,
    file_fingerprint,
    open_or_build,
)
from ecgtune.paths import inside_root
from ecgtune.targets import LEADS, MICROVOLTS_PER_MILLIVOLT, N_SAMPLES, TARGET_NAMES

SOURCE = "deepfake-published"
LABEL_ALGORITHM = "GE MUSE 12SL (published ground truth)"
# Bump when the conversion logic changes what a store contains: old stores then rebuild.
CONVERTER_VERSION = 1

GROUND_TRUTH_FILE = "filtered_all_normals_121977_ground_truth.csv"
# Small set: split -> (ground-truth CSV, folder names accepted for its .asc files, first wins).
SPLIT_LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("train.csv", ("train",)),
    "val": ("validate.csv", ("validation", "validate", "val")),
    "test": ("test.csv", ("test",)),
}
# The ground-truth columns ecgtune reads (the CSV has many more).
GROUND_TRUTH_COLUMNS: tuple[str, ...] = ("patid", "avgrrinterval", "pr", "qrs", "qt")

INT16_MIN, INT16_MAX = int(np.iinfo(np.int16).min), int(np.iinfo(np.int16).max)
CHUNK_SIZE = 512  # ECGs per StoreWriter.append: 512 x 8 x 5000 int16 = 41 MB
SKIP_REASONS: tuple[str, ...] = (
    "missing_asc", "malformed_asc", "flat_lead", "path_outside_root", "asc_without_labels",
)  # fmt: skip
MALFORMED = "malformed_asc"  # RecordFormatError.reason of a file read_asc cannot use
MAX_SKIP_EXAMPLES = 5
OUTSIDE = "names a file outside it; not opened"  # a patid's skip message


# --------------------------------------------------------------------------- .asc files


def read_asc(path: str | os.PathLike) -> np.ndarray:
    """Read one DeepFake `.asc` file.

    Returns an int16 array of shape (8, 5000): microvolts, leads in `LEADS`
    order (I, II, V1-V6), 500 Hz. The file holds the transpose: 5000 rows of
    8 whitespace-separated integers.

    Raises FileNotFoundError if the file does not exist, and RecordFormatError
    (a ValueError) naming the file: reason "malformed_asc" if it is empty, is
    not all integers, has another row or column count, or holds values outside
    int16; "flat_lead" for a lead that barely moves (`check_no_flat_lead`).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # np.loadtxt only warns on an empty file; make it an error we can name.
            warnings.simplefilter("error", UserWarning)
            data = np.loadtxt(path, dtype=np.int32, ndmin=2, comments=None)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "DeepFake .asc file not found", str(path)) from None
    except UserWarning:
        raise RecordFormatError(
            f"{path}: file is empty; expected {N_SAMPLES} rows x {len(LEADS)} integer columns (µV)", MALFORMED
        ) from None
    except ValueError as e:  # includes UnicodeDecodeError
        raise RecordFormatError(
            f"{path}: expected {N_SAMPLES} rows of {len(LEADS)} whitespace-separated integers "
            f"(µV, leads {', '.join(LEADS)}); numpy could not parse it: {e}",
            MALFORMED,
        ) from None
    if data.shape != (N_SAMPLES, len(LEADS)):
        raise RecordFormatError(
            f"{path}: {data.shape[0]} rows x {data.shape[1]} columns; expected {N_SAMPLES} rows "
            f"(10 s at 500 Hz) x {len(LEADS)} columns (leads {', '.join(LEADS)})",
            MALFORMED,
        )
    lo, hi = int(data.min()), int(data.max())
    if lo < INT16_MIN or hi > INT16_MAX:
        raise RecordFormatError(
            f"{path}: values span {lo}..{hi} µV; expected int16 microvolts ({INT16_MIN}..{INT16_MAX})",
            MALFORMED,
        )
    signals = np.ascontiguousarray(data.T, dtype=np.int16)  # (5000, 8) -> (8, 5000)
    check_no_flat_lead(signals / MICROVOLTS_PER_MILLIVOLT, path)
    return signals


def write_asc(path: str | os.PathLike, signals_uv: np.ndarray) -> Path:
    """Write one ECG in the published `.asc` format; return the path.

    `signals_uv`: integer microvolts, shape (8, 5000), leads in `LEADS` order.
    Written as the generator does: 5000 rows x 8 columns, single spaces,
    `np.savetxt(fmt="%i")`. Raises ValueError for another shape or a
    non-integer dtype (round values yourself: the generator truncates).
    """
    a = np.asarray(signals_uv)
    if a.shape != (len(LEADS), N_SAMPLES):
        raise ValueError(
            f"signals_uv has shape {a.shape}; expected ({len(LEADS)}, {N_SAMPLES}) = (leads, samples)"
        )
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"signals_uv has dtype {a.dtype}; expected integer microvolts")
    path = Path(path)
    np.savetxt(path, a.T, fmt="%i")
    return path


# --------------------------------------------------------------------------- ground truth


def _read_ground_truth(csv_path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(labels, implausible mask): see `read_ground_truth`."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "DeepFake ground-truth CSV not found", str(path))
    names = csv_columns(path)
    missing = [c for c in GROUND_TRUTH_COLUMNS if c not in names]
    if missing:
        raise LabelFormatError(
            f"{path}: missing column(s) {missing}; a DeepFake ground-truth CSV needs "
            f"{list(GROUND_TRUTH_COLUMNS)} (MUSE measurements, ms); "
            f"found {[str(c) for c in names.values()][:30]}"
        )
    raw = read_csv_text(path, names, GROUND_TRUTH_COLUMNS)

    ids = raw["patid"].str.strip()
    if (ids == "").any():
        row = int(np.flatnonzero((ids == "").to_numpy())[0])
        raise LabelFormatError(f"{path}: empty patid in data row {row + 1}; every ECG needs its patid")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise LabelFormatError(
            f"{path}: patid values repeat, e.g. {dup.iloc[:5].tolist()}; expected one row per ECG"
        )

    values = {}
    for c in ("avgrrinterval", "pr", "qrs", "qt"):
        num, bad, text = parse_numbers(raw[c])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise LabelFormatError(
                f"{path}: column {c!r} holds non-numeric {text.iloc[row]!r} in data row {row + 1} "
                f"(patid {ids.iloc[row]}); expected milliseconds or an empty cell"
            )
        values[c] = num

    hr, rr_nonpositive = hr_from_rr(values["avgrrinterval"])
    out = pd.DataFrame(
        {
            "record_id": ids.to_numpy(),
            "patient_id": ids.to_numpy(),  # synthetic ECGs belong to nobody: each is its own patient
            "hr": hr.to_numpy(),
            "pr": values["pr"].to_numpy(),
            "qrs": values["qrs"].to_numpy(),
            "qt": values["qt"].to_numpy(),
        }
    )
    implausible = drop_implausible(out)
    implausible["hr"] |= rr_nonpositive.to_numpy()
    return out, implausible


def read_ground_truth(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read a DeepFake ground-truth CSV (MUSE measurements) into ecgtune's label columns.

    Returns one row per ECG, in file order: `record_id` and `patient_id` (both
    the patid, as str), `hr` = 60000 / avgrrinterval (bpm), `pr`, `qrs`, `qt`
    (ms); all float64, NaN where missing. Values outside
    `TARGETS[t].plausible` become NaN; `df.attrs["implausible"]` and
    `df.attrs["missing"]` count them per target (missing counts include them).

    Raises FileNotFoundError, or LabelFormatError naming the file when a
    required column (`patid`, `avgrrinterval`, `pr`, `qrs`, `qt`) is absent,
    a patid is empty or repeated, or a measurement is not a number.
    """
    out, implausible = _read_ground_truth(csv_path)
    out.attrs.update(source=str(csv_path), **label_counts(out, implausible))
    return out


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Table:
    csv: Path
    split: str | None  # None: assign by hash
    asc_dir: Path | None  # None: find it from the patids


def _detect_layout(root: str | os.PathLike) -> tuple[str, list[_Table]]:
    """Which published layout `root` holds: ("split", [train, val, test]) or ("single", [table])."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(errno.ENOENT, "DeepFake dataset folder not found", str(root))
    split_csvs = {s: root / SPLIT_LAYOUT[s][0] for s in SPLITS}
    present = [s for s, p in split_csvs.items() if p.is_file()]
    if present:
        absent = [str(split_csvs[s].name) for s in SPLITS if s not in present]
        if absent:
            raise FileNotFoundError(
                errno.ENOENT,
                f"DeepFake split layout is incomplete: {absent} missing beside "
                f"{[split_csvs[s].name for s in present]} (expected train.csv, validate.csv, test.csv)",
                str(root),
            )
        tables = []
        for s in SPLITS:
            folders = [root / name for name in SPLIT_LAYOUT[s][1]]
            folder = next((f for f in folders if f.is_dir()), None)
            if folder is None:
                raise FileNotFoundError(
                    errno.ENOENT,
                    f"no folder of .asc files for the {s} split; expected one of {[f.name for f in folders]}",
                    str(root),
                )
            tables.append(_Table(split_csvs[s], s, folder))
        return "split", tables
    csv = root / GROUND_TRUTH_FILE
    if not csv.is_file():
        candidates = sorted(root.glob("*ground_truth*.csv"))
        if len(candidates) != 1:
            raise FileNotFoundError(
                errno.ENOENT,
                f"no DeepFake layout found: expected {GROUND_TRUTH_FILE} (121,977-ECG set) or "
                f"train.csv/validate.csv/test.csv (small set)"
                + (
                    f"; several ground-truth CSVs found: {[c.name for c in candidates]}" if candidates else ""
                ),
                str(root),
            )
        csv = candidates[0]
    return "single", [_Table(csv, None, None)]


def _asc_path(folder: Path, patid: str) -> str:
    """`folder/<patid>.asc` if that names an existing file inside `folder` (never outside it), else ""."""
    p = inside_root(folder, f"{patid}.asc")
    return str(p) if p is not None and p.is_file() else ""


def _unlabelled_asc(folder: Path, patids: Sequence[str], csv: Path) -> list[tuple[str, str]]:
    """(reason, message) for each `.asc` in `folder` that has no row in its ground-truth CSV."""
    labelled = {f"{i}.asc" for i in patids}
    return [
        ("asc_without_labels", f"{folder / name}: no row in {csv.name}; not loaded")
        for name in sorted(p.name for p in folder.glob("*.asc"))
        if name not in labelled
    ]


def _find_asc_dir(root: Path, ids: Sequence[str], csv: Path) -> Path:
    """The folder holding `<patid>.asc`: the root itself or exactly one subfolder."""
    probe = list(ids[:50])
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    hits = [d for d in candidates if any(_asc_path(d, i) for i in probe)]
    if not hits:
        raise FileNotFoundError(
            errno.ENOENT,
            f"no <patid>.asc files for the patids of {csv.name} (e.g. {probe[:3]}) "
            "in the folder or its subfolders",
            str(root),
        )
    if len(hits) > 1:
        raise RecordFormatError(
            f"{root}: .asc files for {csv.name} found in several folders {[str(h) for h in hits]}; "
            "expected exactly one folder of signals"
        )
    return hits[0]


# --------------------------------------------------------------------------- conversion


def _read_for_store(path: str) -> tuple[np.ndarray, dict]:
    """`read_asc` as `ecgtune.data.convert.read_chunks` calls a reader: (signals, info)."""
    return read_asc(path), {}


def convert_deepfake(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    limit: int | None = None,
    rebuild: bool = False,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    workers: int = 1,
) -> tuple[ECGStore, bool]:
    """Convert the published DeepFake dataset at `root` into an ecgtune store at `out`.

    Returns (store, reused): an existing store at `out` built from the same
    inputs and options is reused (reused=True) unless `rebuild`.

    The layout is detected (see the module docstring). `split_fractions`
    (train, val, test) applies to the 121,977-ECG set only; the small set keeps
    its published split. `limit` keeps the first `limit` rows of each
    ground-truth table. ECGs whose `.asc` is missing or malformed are skipped
    and counted per reason in provenance["skipped"] (first messages in
    provenance["skipped_examples"]); ECGs with missing or implausible labels
    are kept with NaN (counted in provenance["labels"]). Signals stream into
    the store in chunks of `CHUNK_SIZE`; `workers` > 1 reads them in that many
    processes.

    The content key covers the ground-truth CSVs and every `.asc` file read
    (name, size, mtime), the missing ones, and the options.
    """
    root = Path(root)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of ECGs or None, got {limit}")
    layout, tables = _detect_layout(root)
    claim_store_path(out, inputs=[root])

    frames, flags, unlabelled = [], [], []
    items: list[str | tuple[str, str]] = []  # per row: an .asc to read, or why it is skipped unopened
    for table in tables:
        labels, implausible = _read_ground_truth(table.csv)
        asc_dir = table.asc_dir or _find_asc_dir(root, labels["record_id"].tolist(), table.csv)
        if limit is None:  # with a limit, files past it are left out on purpose
            unlabelled += _unlabelled_asc(asc_dir, labels["record_id"].tolist(), table.csv)
        else:
            labels, implausible = labels.iloc[:limit], implausible.iloc[:limit]
        # A patid is used as a file name only if it stays inside the folder of signals (ecgtune.paths).
        inside = [inside_root(asc_dir, f"{i}.asc") for i in labels["record_id"]]
        labels = labels.assign(
            split=table.split if table.split else assign_split_by_hash(labels["record_id"], split_fractions)
        )
        items += [
            str(p) if p is not None else ("path_outside_root", f"{asc_dir}: patid {i!r} {OUTSIDE}")
            for p, i in zip(inside, labels["record_id"], strict=True)
        ]
        frames.append(labels)
        flags.append(implausible)
    rows = pd.concat(frames, ignore_index=True)
    implausible = pd.concat(flags, ignore_index=True)
    dup = rows["record_id"][rows["record_id"].duplicated()]
    if len(dup):
        raise LabelFormatError(
            f"{root}: patid values appear in more than one ground-truth table, e.g. {dup.iloc[:5].tolist()}"
        )

    paths = [Path(p) for p in items if isinstance(p, str)]
    exists = [p.is_file() for p in paths]
    present = [p for p, e in zip(paths, exists, strict=True) if e]
    missing = sorted(p.name for p, e in zip(paths, exists, strict=True) if not e)
    options = {
        "layout": layout,
        "limit": limit,
        "split_fractions": list(split_fractions) if layout == "single" else None,
    }
    key = content_key(
        {
            "source": SOURCE,
            "converter_version": CONVERTER_VERSION,
            "ground_truth": file_fingerprint([t.csv for t in tables]),
            "signals": file_fingerprint(present),
            "missing_signals": content_key({"names": missing}),
            "options": options,
        }
    )

    def build(path: Path) -> ECGStore:
        t0 = time.time()
        provenance = {
            "source": SOURCE,
            "label_algorithm": LABEL_ALGORITHM,
            "options": options,
            "key": key,
            "inputs": {"root": str(root.resolve()), "ground_truth": [t.csv.name for t in tables]},
        }
        tally = SkipTally(SKIP_REASONS, MAX_SKIP_EXAMPLES)
        tally.add(unlabelled)
        store_cols = ["record_id", "patient_id", "split", *TARGET_NAMES]
        with StoreWriter(path, provenance) as w:
            chunks = read_chunks(
                items,
                _read_for_store,
                missing_reason="missing_asc",
                dtype=np.int16,
                chunk_size=CHUNK_SIZE,
                workers=workers,
            )
            signals = ((signals, status) for signals, status, _ in chunks)
            kept = append_readable(w, signals, rows, store_cols, tally, source=root)
            stored = rows[kept]
            counts = label_counts(stored, implausible[kept])
            w.provenance["labels"] = {
                "missing": counts["missing"],
                "implausible_set_to_nan": counts["implausible"],
            }
            w.provenance["elapsed_s"] = round(time.time() - t0, 1)
        return w.store

    return open_or_build(out, key, build, rebuild=rebuild)

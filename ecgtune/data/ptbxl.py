"""PTB-XL 1.0.3 records with PTB-XL+ 1.0.1 interval labels (PhysioNet), read as published.

PTB-XL (Wagner et al., Sci Data 7:154, 2020) ships `ptbxl_database.csv` (one
row per ECG: `ecg_id`, `patient_id`, `scp_codes`, `strat_fold`,
`filename_hr`, ...) and WFDB records `records500/<group>/<ecg_id>_hr.{hea,dat}`:
12 leads I, II, III, AVR, AVL, AVF, V1-V6, 500 Hz, 10 s, format 16,
adc_gain 1000/mV. PTB-XL+ (Strodthoff et al., Sci Data 10:279, 2023) is a
separate download whose `features/*_features.csv` hold the interval
measurements of three algorithms (GE 12SL, Uni-G, ECGdeli), keyed by
`ecg_id`.

Records are read by `ecgtune.data.wfdb_record` (the reader prediction uses too), in chunks
(`ecgtune.data.convert`); the format's writers are in `ecgtune.data.ptbxl_format`.

Splits follow the PTB-XL benchmark protocol: `strat_fold` 1-8 train, 9
validation, 10 test (`split_for_fold`). PTB-XL assigns all ECGs of a patient
to one fold, so the split is patient-wise by construction (and checked).
"""

from __future__ import annotations

import ast
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgtune.data.checks import drop_implausible, hr_from_rr, label_counts
from ecgtune.data.convert import csv_columns, parse_numbers, read_chunks, read_csv_text
from ecgtune.data.errors import LabelFormatError
from ecgtune.data.ptbxl_format import DATABASE_FILE, FEATURE_FILES, FEATURE_TABLES, ID_COLUMN
from ecgtune.data.simulation_file import SIMULATION_FILE, label_noise_floor
from ecgtune.data.store import (
    ECGStore,
    SkipTally,
    StoreWriter,
    append_readable,
    claim_store_path,
    content_key,
    file_fingerprint,
    open_or_build,
)
from ecgtune.data.wfdb_record import read_record
from ecgtune.paths import inside_root
from ecgtune.targets import TARGET_NAMES

SOURCE = "ptbxl"
# Bump when the conversion logic changes what a store contains: old stores then rebuild.
CONVERTER_VERSION = 1

REQUIRED_DATABASE_COLUMNS: tuple[str, ...] = (
    "ecg_id",
    "patient_id",
    "scp_codes",
    "strat_fold",
    "filename_hr",
)
N_FOLDS = 10

LABEL_ALGORITHMS: dict[str, str] = {
    "12sl": "PTB-XL+ 12sl_features.csv (GE 12SL)",
    "ecgdeli": "PTB-XL+ ecgdeli_features.csv (ECGdeli, KIT)",
    "unig": "PTB-XL+ unig_features.csv (University of Glasgow Uni-G)",
}

CHUNK_SIZE = 256  # records per StoreWriter.append
OUTSIDE = "leads outside the PTB-XL folder; not opened"  # a database path's skip message
# Why a database row's record was skipped (RecordFormatError.reason: ecgtune.data.wfdb_header,
# wfdb_record and checks).
SKIP_REASONS: tuple[str, ...] = (
    "missing_record", "path_outside_root", "malformed_record", "malformed_header", "header_incomplete",
    "header_names_other_record", "unsupported_record", "invalid_gain", "duplicate_lead", "flat_lead",
)  # fmt: skip
MAX_SKIP_EXAMPLES = 5


# --------------------------------------------------------------------------- database and splits


def split_for_fold(fold: int) -> str:
    """The ecgtune split of a PTB-XL `strat_fold`: 1-8 train, 9 val, 10 test.

    Fixed here, not configurable (PTB-XL benchmark protocol, Strodthoff et al.
    2021). Raises ValueError for a fold outside 1-10 or a non-integer.
    """
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer, float, np.floating)):
        raise ValueError(f"strat_fold must be an integer 1-{N_FOLDS}, got {fold!r}")
    if not float(fold).is_integer() or not 1 <= int(fold) <= N_FOLDS:
        raise ValueError(f"strat_fold must be an integer 1-{N_FOLDS}, got {fold!r}")
    fold = int(fold)
    return "train" if fold <= 8 else ("val" if fold == 9 else "test")


def is_normal(scp_codes: dict[str, float], min_likelihood: float = 100.0) -> bool:
    """True if the SCP statements include NORM with likelihood >= `min_likelihood`.

    `scp_codes` is the parsed dict of ptbxl_database.csv, e.g. {'NORM': 100.0,
    'SR': 0.0}. PTB-XL also records NORM at likelihood 0, so a test for the key
    alone (or a substring match on the raw string) would accept those.
    """
    if not isinstance(scp_codes, dict):
        raise TypeError(
            f"scp_codes must be a dict of statement -> likelihood, got {type(scp_codes).__name__}"
        )
    if not 0.0 <= min_likelihood <= 100.0:
        raise ValueError(f"min_likelihood must be within 0-100 (%), got {min_likelihood}")
    likelihood = scp_codes.get("NORM")
    return likelihood is not None and float(likelihood) >= min_likelihood


def _database_path(root: str | os.PathLike) -> Path:
    p = Path(root)
    return p / DATABASE_FILE if p.is_dir() else p


def _integral(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Numeric column whose every value is a whole number (PTB-XL writes ids as 15709.0)."""
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() | (num != np.floor(num))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise LabelFormatError(
            f"{path}: column {column!r} must hold whole numbers; "
            f"data row {row + 1} holds {values.iloc[row]!r}"
        )
    return num.astype("int64")


def read_database(root: str | os.PathLike) -> pd.DataFrame:
    """Read PTB-XL's `ptbxl_database.csv` (`root` is the PTB-XL folder or the CSV itself).

    Returns the table in file order with every column of the file, and:
    `ecg_id` int64, `patient_id` str (the file's float 15709.0 -> "15709"),
    `strat_fold` int64 (1-10), `scp_codes` dict statement -> likelihood (%)
    parsed with ast.literal_eval, `filename_hr` str (record path relative to
    the PTB-XL root, without extension).

    Raises FileNotFoundError, or LabelFormatError naming the file for missing
    columns, non-integer or repeated ids, folds outside 1-10, empty record
    paths, or scp_codes that are not a dict literal.
    """
    path = _database_path(root)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"PTB-XL {DATABASE_FILE} not found", str(path))
    try:
        df = pd.read_csv(path, encoding="utf-8-sig", low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise LabelFormatError(f"{path}: not a readable CSV with a header row ({e})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_DATABASE_COLUMNS if c not in df.columns]
    if missing:
        raise LabelFormatError(
            f"{path}: missing column(s) {missing}; PTB-XL's database needs {list(REQUIRED_DATABASE_COLUMNS)}"
        )
    df["ecg_id"] = _integral(df["ecg_id"], path, "ecg_id")
    dup = df.loc[df["ecg_id"].duplicated(), "ecg_id"]
    if len(dup):
        raise LabelFormatError(f"{path}: ecg_id values repeat, e.g. {dup.iloc[:5].tolist()}")
    df["patient_id"] = _integral(df["patient_id"], path, "patient_id").astype(str)
    df["strat_fold"] = _integral(df["strat_fold"], path, "strat_fold")
    bad_fold = ~df["strat_fold"].between(1, N_FOLDS)
    if bad_fold.any():
        row = df[bad_fold].iloc[0]
        raise LabelFormatError(
            f"{path}: ecg_id {row['ecg_id']} has strat_fold {row['strat_fold']}; expected 1-{N_FOLDS}"
        )
    names = df["filename_hr"].fillna("").astype(str).str.strip()
    if (names == "").any():
        row = df[names == ""].iloc[0]
        raise LabelFormatError(f"{path}: ecg_id {row['ecg_id']} has no filename_hr (record path)")
    df["filename_hr"] = names
    shared = df.loc[names.duplicated(), "filename_hr"]
    if len(shared):
        raise LabelFormatError(
            f"{path}: filename_hr {shared.iloc[0]!r} is given for more than one ecg_id; "
            "expected one record per ECG (one signal stored under two ids would leak between splits)"
        )
    df["scp_codes"] = [_parse_scp(s, path, i) for s, i in zip(df["scp_codes"], df["ecg_id"], strict=True)]
    df.attrs["source"] = str(path)
    return df


def _parse_scp(text: Any, path: Path, ecg_id: int) -> dict[str, float]:
    try:
        codes = ast.literal_eval(str(text))  # never eval(): the file is data, not code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        codes = None
    if not isinstance(codes, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
        for k, v in codes.items()
    ):
        raise LabelFormatError(
            f"{path}: ecg_id {ecg_id} has scp_codes {str(text)[:80]!r}; expected a dict literal of "
            "statement -> likelihood, e.g. \"{'NORM': 100.0, 'SR': 0.0}\""
        )
    return {k: float(v) for k, v in codes.items()}


# --------------------------------------------------------------------------- PTB-XL+ features


def _numeric(values: pd.Series, path: Path, column: str, ids: pd.Series) -> pd.Series:
    num, bad, text = parse_numbers(values)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise LabelFormatError(
            f"{path}: column {column!r} holds non-numeric {text.iloc[row]!r} for ecg_id {ids.iloc[row]}; "
            "expected a number (ms, bpm) or an empty cell"
        )
    return num


def _read_features(path: str | os.PathLike, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(labels, per-row implausible mask): see `read_features`."""
    if source not in FEATURE_TABLES:
        raise ValueError(f"unknown PTB-XL+ feature source {source!r}; allowed: {list(FEATURE_TABLES)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"PTB-XL+ {FEATURE_FILES[source]} not found", str(path))
    table = FEATURE_TABLES[source]
    names = csv_columns(path)
    if ID_COLUMN not in names:
        raise LabelFormatError(
            f"{path}: no {ID_COLUMN!r} column; PTB-XL+ feature tables carry it by name (12sl_features.csv "
            "at column 145 of 783) and ecgtune joins on it, never on row order"
        )
    needed = [table[t] for t in ("pr", "qrs", "qt")]
    absent = [c for c in needed if c not in names]
    hr_col = table["hr"] if table.get("hr") in names else None
    rr_col = table["rr"] if table["rr"] in names else None
    if hr_col is None and rr_col is None:
        absent.append(" or ".join(c for c in (table.get("hr"), table["rr"]) if c))
    if absent:
        raise LabelFormatError(f"{path}: missing column(s) {absent} of the PTB-XL+ {source} table {table}")
    wanted = [ID_COLUMN, *needed, *(c for c in (hr_col, rr_col) if c)]
    raw = read_csv_text(path, names, wanted)
    ids = _integral(raw[ID_COLUMN], path, ID_COLUMN)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise LabelFormatError(f"{path}: ecg_id values repeat, e.g. {dup.iloc[:5].tolist()}")

    out = pd.DataFrame({ID_COLUMN: ids.to_numpy()})
    rr = _numeric(raw[rr_col], path, rr_col, ids) if rr_col else pd.Series(np.nan, index=raw.index)
    hr_rr, rr_nonpositive = hr_from_rr(rr)
    hr = _numeric(raw[hr_col], path, hr_col, ids).fillna(hr_rr) if hr_col else hr_rr
    out["hr"] = hr.to_numpy()
    for t in ("pr", "qrs", "qt"):
        out[t] = _numeric(raw[table[t]], path, table[t], ids).to_numpy()
    implausible = drop_implausible(out)
    implausible["hr"] |= (hr.isna() & rr_nonpositive).to_numpy()
    implausible.insert(0, ID_COLUMN, out[ID_COLUMN].to_numpy())
    out.attrs["hr_column"] = hr_col or f"60000 / {rr_col}"
    return out, implausible


def read_features(path: str | os.PathLike, source: str) -> pd.DataFrame:
    """Read one PTB-XL+ feature table into ecgtune's label columns.

    `source` is "12sl", "ecgdeli" or "unig" and picks the column table
    (`FEATURE_TABLES`). Columns are found by name, never position: in
    12sl_features.csv `ecg_id` sits mid-table and rows are not sorted.

    Returns columns `ecg_id` (int64), `hr` (bpm), `pr`, `qrs`, `qt` (ms),
    float64 with NaN for missing, in file order. hr is the file's HR column
    where it has one and the cell is filled, else 60000 / RR_Mean_Global.
    Values outside `TARGETS[t].plausible` become NaN, counted per target in
    `df.attrs["implausible"]`; `df.attrs["hr_column"]` says where hr came from.

    Raises FileNotFoundError, ValueError for an unknown source, or
    LabelFormatError naming the file when `ecg_id` or a needed column is
    absent, ids repeat or are not integers, or a value is not a number.
    """
    out, implausible = _read_features(path, source)
    out.attrs.update(source=str(path), **label_counts(out, implausible))
    return out


# --------------------------------------------------------------------------- conversion


def _simulated_floor(root: Path, label_source: str) -> dict[str, Any] | None:
    """Per split, the label-noise floor a tree from `ecgtune data simulate` records for its 12SL labels
    (`ecgtune.baselines`); None for any other source. Of the tree's ECGs per fold: a conversion that
    skips or limits ECGs keeps the figure of the whole fold."""
    if label_source != "12sl" or not (root / SIMULATION_FILE).is_file():
        return None
    return {"source": str(root / SIMULATION_FILE), **{s: label_noise_floor(root, s) for s in ("val", "test")}}


def _features_path(root: Path, features: str | os.PathLike | None, label_source: str) -> Path:
    name = FEATURE_FILES[label_source]
    if features is None:
        candidates = [root / "features" / name]
    else:
        f = Path(features)
        candidates = [f / "features" / name, f / name] if f.is_dir() else [f]
    for c in candidates:
        if c.is_file():
            other = [s for s, fname in FEATURE_FILES.items() if c.name == fname and s != label_source]
            if other:
                raise ValueError(f"{c} is the {other[0]} feature table but label_source is {label_source!r}")
            return c
    raise FileNotFoundError(
        errno.ENOENT,
        f"PTB-XL+ {name} not found (PTB-XL+ is a separate PhysioNet download: pass features=<the PTB-XL+ "
        f"folder or the CSV>); looked at {[str(c) for c in candidates]}",
        str(candidates[0]),
    )


def _record_path(root: Path, filename: str) -> str:
    """`root/filename` as a string if it stays inside `root`, else ""."""
    p = inside_root(root, filename)
    return "" if p is None else str(p)


def convert_ptbxl(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    features: str | os.PathLike | None = None,
    label_source: str = "12sl",
    normal_only: bool = False,
    min_norm_likelihood: float = 100.0,
    limit: int | None = None,
    rebuild: bool = False,
    workers: int = 1,
) -> tuple[ECGStore, bool]:
    """Convert PTB-XL (+ PTB-XL+ labels) into an ecgtune store at `out`; return (store, reused).

    `root`: the PTB-XL 1.0.3 folder (ptbxl_database.csv, records500/).
    `features`: the PTB-XL+ 1.0.1 folder or its `<label_source>_features.csv`;
    None looks for `root/features/<label_source>_features.csv` (PTB-XL+ is a
    separate download, so usually pass it). `label_source`: "12sl", "ecgdeli"
    or "unig". `normal_only` keeps ECGs whose scp_codes hold NORM with
    likelihood >= `min_norm_likelihood`. `limit` keeps the first `limit`
    database rows (by ecg_id) after that filter.

    Labels join on ecg_id; ECGs without a features row keep NaN labels
    (counted in provenance["labels"]["no_features_row"]). Database rows whose
    record is missing or malformed are skipped and counted per reason in
    provenance["skipped"]. Splits come from strat_fold (`split_for_fold`); a
    patient found in two splits is an error. Signals stream into the store in
    chunks; `workers` > 1 reads records in that many processes.

    The content key covers ptbxl_database.csv, the features CSV, the .hea and
    .dat of every selected record (name, size, mtime; missing ones by name)
    and the options.
    """
    root = Path(root)
    if label_source not in FEATURE_TABLES:
        raise ValueError(f"unknown label_source {label_source!r}; allowed: {list(FEATURE_TABLES)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of ECGs or None, got {limit}")
    if not 0.0 <= min_norm_likelihood <= 100.0:
        raise ValueError(f"min_norm_likelihood must be within 0-100 (%), got {min_norm_likelihood}")
    db_path = _database_path(root)
    features_path = _features_path(root, features, label_source)
    claim_store_path(out, inputs=[root, features_path])
    db = read_database(db_path)
    feats, implausible = _read_features(features_path, label_source)

    rows = db.sort_values("ecg_id", kind="stable")
    n_database = len(rows)
    if normal_only:
        rows = rows[[is_normal(c, min_norm_likelihood) for c in rows["scp_codes"]]]
    n_not_normal = n_database - len(rows)
    if limit is not None:
        rows = rows.iloc[:limit]
    rows = rows[["ecg_id", "patient_id", "strat_fold", "filename_hr"]].reset_index(drop=True)
    rows["split"] = [split_for_fold(f) for f in rows["strat_fold"]]
    splits_per_patient = rows.groupby("patient_id")["split"].nunique()
    leaky = splits_per_patient[splits_per_patient > 1]
    if len(leaky):
        raise LabelFormatError(
            f"{db_path}: patient(s) {leaky.index[:5].tolist()} have ECGs in more than one split; "
            "PTB-XL assigns each patient to one strat_fold"
        )
    rows = rows.merge(feats, on="ecg_id", how="left", validate="one_to_one", indicator=True)
    has_features = (rows.pop("_merge") == "both").to_numpy()
    flags = implausible.set_index("ecg_id").reindex(rows["ecg_id"], fill_value=False).reset_index(drop=True)
    rows["record_id"] = rows["ecg_id"].astype(str)
    # A path from the database is used only if it stays inside the PTB-XL root (ecgtune.paths).
    rows["path"] = [_record_path(root, f) for f in rows["filename_hr"]]

    record_files = [Path(p + ext) for p in rows["path"] if p for ext in (".hea", ".dat")]
    exists = [f.is_file() for f in record_files]
    present = [f for f, e in zip(record_files, exists, strict=True) if e]
    missing = sorted(str(f.relative_to(root)) for f, e in zip(record_files, exists, strict=True) if not e)
    options = {
        "label_source": label_source,
        "normal_only": normal_only,
        "min_norm_likelihood": min_norm_likelihood if normal_only else None,
        "limit": limit,
    }
    key = content_key(
        {
            "source": SOURCE,
            "converter_version": CONVERTER_VERSION,
            "database": file_fingerprint([db_path]),
            "features": file_fingerprint([features_path]),
            "records": file_fingerprint(present),
            "missing_records": content_key({"names": missing}),
            "outside_root": content_key({"names": rows.loc[rows["path"] == "", "filename_hr"].tolist()}),
            "options": options,
        }
    )

    def build(path: Path) -> ECGStore:
        t0 = time.time()
        provenance = {
            "source": SOURCE,
            "label_algorithm": LABEL_ALGORITHMS[label_source],
            "options": options,
            "key": key,
            "inputs": {
                "root": str(root.resolve()),
                "database": db_path.name,
                "features": str(features_path.resolve()),
                "hr_column": feats.attrs.get("hr_column"),
            },
        }
        tally = SkipTally(SKIP_REASONS, MAX_SKIP_EXAMPLES)
        resampled = truncated = 0
        store_cols = ["record_id", "patient_id", "split", *TARGET_NAMES, "strat_fold"]

        def counting_fixes() -> Iterator[tuple[np.ndarray, list]]:
            nonlocal resampled, truncated
            items = [
                p or ("path_outside_root", f"ecg_id {i}: filename_hr {n!r} {OUTSIDE}")
                for p, i, n in zip(rows["path"], rows["ecg_id"], rows["filename_hr"], strict=True)
            ]
            chunks = read_chunks(
                items,
                read_record,
                missing_reason="missing_record",
                dtype=np.float32,
                chunk_size=CHUNK_SIZE,
                workers=workers,
            )
            for signals, status, infos in chunks:
                resampled += sum(1 for i in infos if i.get("resampled_from_hz"))
                truncated += sum(1 for i in infos if i.get("truncated_from_s"))
                yield signals, status

        with StoreWriter(path, provenance) as w:
            kept = append_readable(w, counting_fixes(), rows, store_cols, tally, source=root)
            stored = rows[kept]
            w.provenance["selection"] = {
                "database_rows": n_database,
                "not_normal": n_not_normal if normal_only else 0,
                "selected": len(rows),
            }
            counts = label_counts(stored, flags[kept])
            w.provenance["labels"] = {
                "no_features_row": int((~has_features[kept]).sum()),
                "missing": counts["missing"],
                "implausible_set_to_nan": counts["implausible"],
            }
            w.provenance["signals"] = {"resampled_to_500hz": resampled, "cut_to_first_10s": truncated}
            floor = _simulated_floor(root, label_source)
            if floor is not None:
                w.provenance["label_noise_floor"] = floor
            w.provenance["elapsed_s"] = round(time.time() - t0, 1)
        return w.store

    return open_or_build(out, key, build, rebuild=rebuild)

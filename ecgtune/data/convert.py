"""What both converters (`ecgtune.data.ptbxl`, `ecgtune.data.deepfake`) share: reading their label
tables (CSV columns by name, numbers or empty cells) and reading their records in chunks, in this
process or in a pool of processes, with a skip reason per record.

A converter lists one item per database row: the path of a record to read, or a (reason, message)
pair for a row skipped without opening anything (e.g. a path leading outside the dataset). Each
chunk comes back as (signals, status, infos) for `ecgtune.data.store.append_readable`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ecgtune.data.errors import LabelFormatError, RecordFormatError
from ecgtune.targets import LEADS, N_SAMPLES

# Cells of a label table that mean "no value": missing, not malformed (compared stripped, lowercase).
MISSING_TOKENS = frozenset({"", "nan", "na", "null", "none"})

# --------------------------------------------------------------------------- label tables


def csv_columns(path: str | os.PathLike) -> dict[str, Any]:
    """A CSV's column names, stripped -> as written. Raises LabelFormatError naming `path` if it has
    no readable header row."""
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise LabelFormatError(f"{path}: not a readable CSV with a header row ({e})") from None
    return {str(c).strip(): c for c in header.columns}


def read_csv_text(path: str | os.PathLike, columns: dict[str, Any], wanted: Sequence[str]) -> pd.DataFrame:
    """The `wanted` columns (stripped names; `columns` from `csv_columns`) of the CSV at `path`, in
    file order, every cell as text: nothing is turned into NaN or a number behind the reader's back."""
    raw = pd.read_csv(
        path, usecols=[columns[c] for c in wanted], dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    return raw.rename(columns={columns[c]: c for c in wanted})


def parse_numbers(cells: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(float64 values, NaN for a missing cell (`MISSING_TOKENS`); mask of cells that are neither a
    number nor missing; the stripped text, for the reader's message naming the first such cell)."""
    text = cells.astype(str).str.strip()
    missing = cells.isna() | text.str.lower().isin(MISSING_TOKENS)
    num = pd.to_numeric(text.where(~missing), errors="coerce")
    return num.astype("float64"), num.isna() & ~missing, text


# --------------------------------------------------------------------------- records in chunks

Status = tuple[str, str] | None  # None: read; else (skip reason, message)
# Reads one record: (8, 5000) signals and an info dict; FileNotFoundError or RecordFormatError if it cannot.
ReadOne = Callable[[str], tuple[np.ndarray, dict[str, Any]]]
Chunk = tuple[np.ndarray, list[Status], list[dict[str, Any]]]


def _read_chunk(
    read_one: ReadOne, missing_reason: str, dtype: np.dtype, items: Sequence[str | tuple[str, str]]
) -> Chunk:
    out = np.zeros((len(items), len(LEADS), N_SAMPLES), dtype=dtype)  # skipped rows stay zero
    status: list[Status] = []
    infos: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        info: dict[str, Any] = {}
        if isinstance(item, tuple):  # skipped without being opened
            status.append(item)
        else:
            try:
                out[i], info = read_one(item)
                status.append(None)
            except FileNotFoundError as e:
                status.append((missing_reason, str(e)))
            except RecordFormatError as e:
                status.append((e.reason, str(e)))
        infos.append(info)
    return out, status, infos


def read_chunks(
    items: Sequence[str | tuple[str, str]],
    read_one: ReadOne,
    *,
    missing_reason: str,
    dtype: np.dtype | type,
    chunk_size: int,
    workers: int = 1,
) -> Iterator[Chunk]:
    """Read `items` in chunks of `chunk_size`, in order; yield (signals, status, infos) per chunk.

    signals: (len(chunk), 8, 5000) of `dtype` as `read_one` returns them (zeros for skipped rows);
    status per item: None (read) or (reason, message) — `missing_reason` for a FileNotFoundError,
    the error's `reason` for a RecordFormatError, or the item itself for an item that is already a
    (reason, message) pair; infos: what `read_one` returned beside the signals ({} if skipped).
    Other exceptions propagate. `workers` > 1 reads chunks in that many processes (`read_one` must
    then be a module-level function, which pickles by name).
    """
    read = partial(_read_chunk, read_one, missing_reason, np.dtype(dtype))
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    if workers <= 1 or len(chunks) <= 1:
        yield from map(read, chunks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(read, chunks)

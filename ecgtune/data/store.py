"""The cached ECG store every trial reads.

Every source (published DeepFake `.asc`, GAN output, PTB-XL WFDB) converts once
into one directory:

    train.i16, val.i16, test.i16   raw int16, C order, (n_split, 8, 5000), microvolts
    labels.csv         one row per ECG: record_id, patient_id, split, hr, pr, qrs, qt, ...
                       ordered train rows, then val, then test (row i of a split = ECG i of its file)
    provenance.json    written last: split sizes, source, label algorithm, options, content key

One file per split makes every split a contiguous memory map (a batch is a
slice, never a gather over the whole set), and means a reader of the training
and validation splits never opens the test file at all.

A store is trusted only if `provenance.json` exists, so a conversion that dies
half-way leaves nothing a later run would open. Building happens in a sibling
temporary directory that is renamed into place at the end. The only thing a build
may replace is a store (`is_store_dir`): `claim_store_path` refuses any other output
path before work starts, and `StoreWriter.close` checks again before the swap.

Signals are memory-mapped read-only: any number of trials on a node share the
page cache instead of each holding a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgtune.data.errors import RecordFormatError
from ecgtune.paths import OutputPathError, check_apart_from_inputs, marker_kind, write_marker
from ecgtune.targets import LEADS, MICROVOLTS_PER_MILLIVOLT, N_SAMPLES, SAMPLING_RATE_HZ, TARGET_NAMES

STORE_FORMAT_VERSION = 1
LABELS_FILE = "labels.csv"
PROVENANCE_FILE = "provenance.json"
SPLITS: tuple[str, ...] = ("train", "val", "test")
REQUIRED_COLUMNS: tuple[str, ...] = ("record_id", "patient_id", "split", *TARGET_NAMES)
INT16_MAX = np.iinfo(np.int16).max


class StoreError(ValueError):
    """A store directory is missing, incomplete or inconsistent."""


def millivolts_to_int16(signals_mv: np.ndarray) -> tuple[np.ndarray, int]:
    """Quantise float millivolts to int16 microvolts; return (array, clipped sample count).

    Values beyond ±32.767 mV are clipped (and counted): no real surface ECG
    reaches them, so they are saturation or artefact.
    """
    uv = np.rint(np.asarray(signals_mv, dtype=np.float64) * MICROVOLTS_PER_MILLIVOLT)
    clipped = int(np.count_nonzero(np.abs(uv) > INT16_MAX))
    return np.clip(uv, -INT16_MAX, INT16_MAX).astype(np.int16), clipped


def content_key(parts: dict[str, Any]) -> str:
    """A stable hash of everything a store's content depends on (inputs and options)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_fingerprint(paths: Iterable[Path]) -> str:
    """Hash of (name, size, mtime) of input files: cheap, and changes when an input changes."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class SkipTally:
    """Records a conversion skipped, counted per reason, with the first few messages as examples.

    Converters read records in chunks; each chunk reports, per record, None (read) or
    (reason, message). `add` counts them and returns which records to keep; `provenance`
    is what the store records about them.
    """

    def __init__(self, reasons: Sequence[str], max_examples: int = 5):
        self.counts = dict.fromkeys(reasons, 0)
        self.examples: dict[str, list[str]] = {r: [] for r in reasons}
        self.max_examples = max_examples

    def add(self, status: Sequence[tuple[str, str] | None]) -> np.ndarray:
        for s in status:
            if s is not None:
                reason, message = s
                self.counts[reason] = self.counts.get(reason, 0) + 1
                examples = self.examples.setdefault(reason, [])
                if len(examples) < self.max_examples:
                    examples.append(message)
        return np.array([s is None for s in status], bool)

    def first_examples(self) -> list[str]:
        return [m[0] for m in self.examples.values() if m]

    def provenance(self) -> dict[str, Any]:
        # Only the reasons that occurred: each converter documents every reason it checks.
        counts = {r: n for r, n in self.counts.items() if n}
        examples = {r: m for r, m in self.examples.items() if m}
        return {"skipped": counts, "skipped_examples": examples}


def append_readable(
    writer: StoreWriter,
    chunks: Iterable[tuple[np.ndarray, Sequence[tuple[str, str] | None]]],
    rows: pd.DataFrame,
    columns: Sequence[str],
    tally: SkipTally,
    source: str | os.PathLike,
) -> np.ndarray:
    """Append the readable records of each chunk to `writer`; return which of `rows` were kept.

    `chunks` yields (signals, status) for consecutive rows: status per record is None (read)
    or (reason, message), counted in `tally`. A conversion that reads nothing is an error
    naming `source` and the reasons.
    """
    kept = np.zeros(len(rows), bool)
    start = 0
    for signals, status in chunks:
        ok = tally.add(status)
        if ok.any():
            writer.append(signals[ok], rows.iloc[start : start + len(status)].loc[ok, list(columns)])
        kept[start : start + len(status)] = ok
        start += len(status)
    if not kept.any():
        raise RecordFormatError(
            f"{source}: no ECGs could be read; all {len(rows)} ECGs were skipped {tally.counts}, "
            f"e.g. {tally.first_examples()}"
        )
    writer.provenance.update(tally.provenance())
    return kept


def split_file(split: str) -> str:
    return f"{split}.i16"


def is_store_dir(path: str | os.PathLike) -> bool:
    """True for a directory ecgtune built as a store: marked so, or (stores written before the marker
    existed) holding a provenance.json with a store format version."""
    p = Path(path)
    if marker_kind(p) == "store":
        return True
    try:
        return "format_version" in json.loads((p / PROVENANCE_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return False


def claim_store_path(path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Check, before any work, that a store may be written at `path`; return it.

    Allowed: an absent path, an empty directory, or an existing store (replaced once the new
    one is complete). Refused with OutputPathError naming the path: a file, any other non-empty
    directory, and a path that is, lies inside or contains one of `inputs` (the source data).
    """
    p = Path(path).expanduser()
    check_apart_from_inputs(p, inputs)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{p}: exists and is not a directory; refusing to replace a file with a store")
    if p.is_dir() and not is_store_dir(p) and any(p.iterdir()):
        raise OutputPathError(
            f"{p}: a non-empty directory that is not an ecgtune store; refusing to replace it — "
            "choose a new or empty output directory"
        )
    return p


class StoreWriter:
    """Streams chunks of ECGs into a new store; commits atomically on `close()`.

    Use as a context manager; an exception inside the block deletes the
    temporary directory and leaves any existing store at `path` untouched.

        with StoreWriter(path, provenance) as w:
            w.append(signals, labels_df)   # labels_df has a "split" column
        store = w.store
    """

    def __init__(self, path: str | os.PathLike, provenance: dict[str, Any]):
        self.path = Path(path)
        self.provenance = dict(provenance)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        claim_store_path(self.path)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.building-", dir=self.path.parent))
        write_marker(self._tmp, "store")
        self._files = {s: open(self._tmp / split_file(s), "wb") for s in SPLITS}
        self._labels: dict[str, list[pd.DataFrame]] = {s: [] for s in SPLITS}
        self.n = 0
        self.clipped_samples = 0

    def append(self, signals: np.ndarray, labels: pd.DataFrame) -> None:
        """Add ECGs. `signals`: int16 µV (n, 8, 5000), or float mV (quantised here)."""
        signals = np.asarray(signals)
        if signals.ndim != 3 or signals.shape[1:] != (len(LEADS), N_SAMPLES):
            raise StoreError(
                f"signals chunk has shape {signals.shape}; expected (n, {len(LEADS)}, {N_SAMPLES})"
            )
        if len(labels) != len(signals):
            raise StoreError(f"{len(signals)} signals but {len(labels)} label rows in one chunk")
        if "split" not in labels.columns:
            raise StoreError(f"label rows lack the 'split' column; required: {list(REQUIRED_COLUMNS)}")
        bad = sorted(set(labels["split"]) - set(SPLITS))
        if bad:
            raise StoreError(f"split values {bad} not in {list(SPLITS)}")
        if signals.dtype != np.int16:
            signals, clipped = millivolts_to_int16(signals)
            self.clipped_samples += clipped
        labels = labels.reset_index(drop=True)
        split_of_row = labels["split"].to_numpy()
        for s in SPLITS:
            rows = np.flatnonzero(split_of_row == s)
            if len(rows):
                self._files[s].write(np.ascontiguousarray(signals[rows]).tobytes())
                self._labels[s].append(labels.iloc[rows])
        self.n += len(signals)

    def close(self) -> ECGStore:
        for f in self._files.values():
            f.close()
        if self.n == 0:
            raise StoreError(f"no ECGs were written to {self.path}: every input was skipped or empty")
        labels = pd.concat([df for s in SPLITS for df in self._labels[s]], ignore_index=True)
        labels = _check_labels(labels)
        labels.to_csv(self._tmp / LABELS_FILE, index=False)
        provenance = {
            **self.provenance,
            "format_version": STORE_FORMAT_VERSION,
            "n": self.n,
            "dtype": "int16",
            "units": "microvolt",
            "leads": list(LEADS),
            "sampling_rate_hz": SAMPLING_RATE_HZ,
            "n_samples": N_SAMPLES,
            "clipped_samples": self.clipped_samples,
            "split_counts": {s: int((labels["split"] == s).sum()) for s in SPLITS},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        # provenance.json is the commit marker: write it last, then swap directories.
        with open(self._tmp / PROVENANCE_FILE, "w") as f:
            json.dump(provenance, f, indent=2, default=str)
        # Checked again at the swap: something may have appeared at the path while the store was built.
        claim_store_path(self.path)
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
            self.path.rename(old / "store")
        self._tmp.rename(self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # only ever an ecgtune store (or an empty directory)
        return ECGStore(self.path)

    def abort(self) -> None:
        for f in self._files.values():
            f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.store = self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def _check_labels(labels: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in labels.columns]
    if missing:
        raise StoreError(f"label table lacks columns {missing}; required: {list(REQUIRED_COLUMNS)}")
    labels = labels.copy()
    labels["record_id"] = labels["record_id"].astype(str)
    labels["patient_id"] = labels["patient_id"].astype(str)
    for t in TARGET_NAMES:
        try:
            labels[t] = pd.to_numeric(labels[t], errors="raise").astype("float64")
        except (ValueError, TypeError) as e:
            raise StoreError(f"label column {t!r} must be numeric (NaN for missing): {e}") from None
    if labels["record_id"].duplicated().any():
        dup = labels.loc[labels["record_id"].duplicated(), "record_id"].iloc[:5].tolist()
        raise StoreError(f"duplicate record_id values in the label table, e.g. {dup}")
    return labels


@dataclass(frozen=True)
class SplitArrays:
    """One split of a store: a read-only memory map of its signals, and its targets."""

    signals: np.ndarray  # (n, 8, 5000) int16 µV, memory-mapped
    targets: np.ndarray  # (n, k) float32 in target units, NaN = missing
    target_names: tuple[str, ...]
    record_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.signals)


class ECGStore:
    """A finished store, opened read-only."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        prov_file = self.path / PROVENANCE_FILE
        if not prov_file.is_file():
            raise StoreError(
                f"{self.path} is not a finished ecgtune store (no {PROVENANCE_FILE}); "
                "build it with `ecgtune data ...`"
            )
        with open(prov_file) as f:
            self.provenance: dict[str, Any] = json.load(f)
        if self.provenance.get("format_version") != STORE_FORMAT_VERSION:
            raise StoreError(
                f"{prov_file}: store format {self.provenance.get('format_version')}, "
                f"this ecgtune reads {STORE_FORMAT_VERSION}; rebuild the store"
            )
        self.labels = pd.read_csv(self.path / LABELS_FILE, dtype={"record_id": str, "patient_id": str})
        if len(self.labels) != self.provenance["n"]:
            raise StoreError(
                f"{self.path / LABELS_FILE}: {len(self.labels)} rows, provenance says {self.provenance['n']}"
            )
        split_col = self.labels["split"].to_numpy()
        self._rows = {s: np.flatnonzero(split_col == s) for s in SPLITS}

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def key(self) -> str | None:
        return self.provenance.get("key")

    def split_labels(self, split: str) -> pd.DataFrame:
        """The label rows of one split, in the order of its signal file."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {list(SPLITS)}")
        return self.labels.iloc[self._rows[split]].reset_index(drop=True)

    def signals(self, split: str) -> np.ndarray:
        """Read-only memory map (n, 8, 5000) int16 µV of one split. Opens only that split's file."""
        n = len(self.split_labels(split))
        f = self.path / split_file(split)
        expected = n * len(LEADS) * N_SAMPLES * 2
        if not f.is_file() or f.stat().st_size != expected:
            size = f.stat().st_size if f.is_file() else "missing"
            raise StoreError(f"{f}: size {size} bytes, expected {expected} for {n} ECGs of (8, 5000) int16")
        if n == 0:
            return np.zeros((0, len(LEADS), N_SAMPLES), dtype=np.int16)
        return np.memmap(f, dtype=np.int16, mode="r", shape=(n, len(LEADS), N_SAMPLES))

    def split(self, split: str, targets: Sequence[str] = TARGET_NAMES) -> SplitArrays:
        labels = self.split_labels(split)
        y = labels[list(targets)].to_numpy(dtype=np.float32)
        return SplitArrays(self.signals(split), y, tuple(targets), labels["record_id"].to_numpy())

    def summary(self) -> str:
        p = self.provenance
        lines = [f"store {self.path}", f"  source: {p.get('source')}  ECGs: {len(self)}  key: {p.get('key')}"]
        if p.get("label_algorithm"):
            lines.append(f"  labels: {p['label_algorithm']}")
        lines.append("  split sizes: " + ", ".join(f"{s} {p['split_counts'][s]}" for s in SPLITS))
        lines.append(f"  {'target':<6} {'n':>6} {'median':>8} {'p5':>8} {'p95':>8}")
        for t in TARGET_NAMES:
            v = self.labels[t].dropna()
            if len(v):
                q = v.quantile([0.5, 0.05, 0.95]).to_numpy()
                lines.append(f"  {t:<6} {len(v):>6} {q[0]:>8.1f} {q[1]:>8.1f} {q[2]:>8.1f}")
            else:
                lines.append(f"  {t:<6} {0:>6}")
        skipped = {r: n for r, n in (p.get("skipped") or {}).items() if n}
        if skipped:
            lines.append(f"  skipped {sum(skipped.values())} input ECGs:")
            for reason, n in skipped.items():
                lines.append(f"    {reason}: {n}")
                for example in (p.get("skipped_examples") or {}).get(reason, [])[:3]:
                    lines.append(f"      e.g. {example}")
        return "\n".join(lines)


def open_or_build(
    path: str | os.PathLike, key: str, build: Callable[[Path], ECGStore], rebuild: bool = False
) -> tuple[ECGStore, bool]:
    """Open the store at `path` if it was built from the same inputs (`key`), else build it.

    Returns (store, reused). `build(path)` must write the store with a
    provenance whose "key" equals `key`.
    """
    path = Path(path)
    if not rebuild and (path / PROVENANCE_FILE).is_file():
        try:
            store = ECGStore(path)
        except StoreError:
            store = None
        if store is not None and store.key == key:
            return store, True
    store = build(path)
    if store.key != key:
        raise StoreError(f"builder for {path} wrote key {store.key}, expected {key}")
    return store, False


def assign_split_by_hash(
    ids: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> list[str]:
    """Deterministic train/val/test split from a hash of each id.

    Used for sources without patients or folds (DeepFake): the same id always
    lands in the same split, whatever the order or subset of files read.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions {fractions} must be non-negative and sum to 1")
    edges = np.cumsum(fractions)
    out = []
    for i in ids:
        u = int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") / 2**64
        out.append(SPLITS[int(np.searchsorted(edges, u, side="right"))] if u < edges[-1] else SPLITS[-1])
    return out

"""The backbone store: pretrained backbones by key, on any filesystem Ray Tune's storage can use.

Layout under the store's root (a local path or a URI such as s3://bucket/runs/backbones, read and
written through pyarrow.fs, the layer Ray Tune's `storage_path` uses):

    STORE.json                         what this folder is (written when the store is first used)
    <key>/entry.json                   written last: key material, epochs' metrics, provenance, checksum
    <key>/weights-<sha256[:16]>.pt     the model's state_dict after the last pretraining epoch
    .claims/<key>/<holder>.claim       who is pretraining <key> now (`ecgtune.backbones.claims`)
    .quarantine/<key>-<time>/          entries refused as corrupt or foreign, moved aside (never deleted)

An entry exists once its entry.json exists. It is written after the weights, in one step (a rename on a
local disk; one PUT on object storage, where an object appears whole or not at all), and it names the
weights file and its SHA-256. A half-written entry is never loaded: without entry.json it is not there,
and weights that do not match the checksum are refused. Weights files are named by their checksum, so
two writers of one key never overwrite each other's file.

No Ray and no training here: `ecgtune.reuse` decides when to look up, claim and write.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from ecgtune.backbones.key import backbone_key

if TYPE_CHECKING:
    import torch

STORE_FILE = "STORE.json"
ENTRY_FILE = "entry.json"
CLAIMS_DIR = ".claims"
QUARANTINE_DIR = ".quarantine"
ENTRY_FORMAT = 1


class EntryRefused(ValueError):
    """An entry that exists but must not be loaded: corrupt, truncated, or for other key material."""


@dataclass
class Backbone:
    """A pretrained backbone: what fine-tuning starts from, and what pretraining measured on the way.

    `weights`: the whole model's state_dict after the last pretraining epoch (head included, for
    `transfer.keep_head`). `epochs`: the metrics of every pretraining epoch as the pretraining run
    reported them. `readout_store`: the key of the fine-tuning store whose validation fold those epochs'
    zero-shot PTB-XL read-outs were measured on. `provenance`: which trial and sweep pretrained it,
    where, and how many seconds it took.
    """

    key: str
    material: dict[str, Any]
    weights: dict[str, torch.Tensor]
    epochs: list[dict[str, Any]]
    readout_store: str | None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrain_seconds(self) -> float:
        """Seconds the pretraining epochs took where they ran: what a reuse saves."""
        return float(sum(e.get("epoch_seconds") or 0.0 for e in self.epochs))


@dataclass
class EntryInfo:
    """One entry as `ecgtune backbones ls` lists it (no weights read)."""

    key: str
    bytes: int
    material: dict[str, Any]
    provenance: dict[str, Any]
    epochs: int


def filesystem(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a local path or URI (query parameters such as `endpoint_override` included,
    as pyarrow reads them), and the path on it without a trailing slash."""
    text = os.fspath(path)
    if "://" in text:
        fs, root = pafs.FileSystem.from_uri(text)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


class BackboneStore:
    """Pretrained backbones under one root (see the module docstring for the layout)."""

    def __init__(self, uri: str | os.PathLike[str]):
        self.uri = os.fspath(uri)
        self.fs, self.root = filesystem(self.uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    # ------------------------------------------------------------------------------------ paths

    def entry_dir(self, key: str) -> str:
        return f"{self.root}/{key}"

    def claims_dir(self, key: str) -> str:
        return f"{self.root}/{CLAIMS_DIR}/{key}"

    def describe(self, key: str) -> str:
        """How a message names an entry: the store as the user wrote it, and the key."""
        return f"backbone {key} in {self.uri.rstrip('/')}"

    # ----------------------------------------------------------------------------------- reading

    def is_store(self) -> bool:
        return self.fs.get_file_info(f"{self.root}/{STORE_FILE}").type == pafs.FileType.File

    def has(self, key: str) -> bool:
        return self.fs.get_file_info(f"{self.entry_dir(key)}/{ENTRY_FILE}").type == pafs.FileType.File

    def get(self, key: str, material: dict[str, Any]) -> Backbone | None:
        """The entry of `key`, checked against `material`; None when there is none.

        Raises EntryRefused (one line naming the entry and what is wrong) for an entry that exists but
        is corrupt, truncated, or was written for other key material. It is never loaded.
        """
        if not self.has(key):
            return None
        meta = self._read_meta(key)
        if backbone_key(material) != key:
            raise ValueError(f"key {key} is not the key of the material it was asked with")
        if meta.get("material") != material:
            theirs, ours = meta.get("material") or {}, material
            differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise EntryRefused(
                f"{self.describe(key)}: written for other key material (differs in {', '.join(differ)}); "
                "not loaded"
            )
        raw = self._read_bytes(f"{self.entry_dir(key)}/{meta['weights']}", key)
        if len(raw) != meta["bytes"] or hashlib.sha256(raw).hexdigest() != meta["sha256"]:
            what = "truncated" if len(raw) < meta["bytes"] else "corrupt"
            raise EntryRefused(
                f"{self.describe(key)}: {meta['weights']} is {what} ({len(raw)} bytes, checksum "
                f"{'matches' if hashlib.sha256(raw).hexdigest() == meta['sha256'] else 'differs'}; "
                f"entry.json says {meta['bytes']} bytes); not loaded"
            )
        import torch  # here, not at import: `ecgtune backbones ls` needs no torch

        try:
            weights = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:  # a checksummed file that torch cannot read: refused, whatever the cause
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EntryRefused(f"{self.describe(key)}: weights unreadable ({why}); not loaded") from None
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise EntryRefused(f"{self.describe(key)}: weights are not a state_dict; not loaded")
        return Backbone(
            key=key,
            material=material,
            weights=weights,
            epochs=meta["epochs"],
            readout_store=meta.get("readout_store"),
            provenance=meta.get("provenance", {}),
        )

    def _read_bytes(self, path: str, key: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except (FileNotFoundError, OSError) as exc:
            raise EntryRefused(
                f"{self.describe(key)}: cannot read {path.rsplit('/', 1)[-1]} ({exc})"
            ) from None

    def _read_meta(self, key: str) -> dict[str, Any]:
        raw = self._read_bytes(f"{self.entry_dir(key)}/{ENTRY_FILE}", key)
        try:
            meta = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EntryRefused(f"{self.describe(key)}: entry.json is not JSON; not loaded") from None
        required = {"format", "key", "material", "weights", "sha256", "bytes", "epochs"}
        if not isinstance(meta, dict) or not required <= set(meta):
            missing = sorted(required - set(meta)) if isinstance(meta, dict) else sorted(required)
            raise EntryRefused(f"{self.describe(key)}: entry.json lacks {', '.join(missing)}; not loaded")
        if meta["format"] != ENTRY_FORMAT or meta["key"] != key:
            raise EntryRefused(
                f"{self.describe(key)}: entry.json is for key {meta['key']!r}, format {meta['format']!r} "
                f"(expected {key!r}, format {ENTRY_FORMAT}); not loaded"
            )
        return meta

    def entries(self) -> Iterator[EntryInfo]:
        """Every committed entry (an entry.json that parses), in key order; weights are not read."""
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.base_name):
            if info.type != pafs.FileType.Directory or info.base_name.startswith("."):
                continue
            key = info.base_name
            if not self.has(key):
                continue
            try:
                meta = self._read_meta(key)
            except EntryRefused:
                continue
            yield EntryInfo(key, int(meta["bytes"]), meta["material"], meta.get("provenance", {}),
                            len(meta["epochs"]))  # fmt: skip

    # ----------------------------------------------------------------------------------- writing

    def put(self, backbone: Backbone) -> bool:
        """Write an entry: the weights, then entry.json naming them. False (nothing written) when the
        key already has an entry: entries are never replaced, and the first writer's stays."""
        key = backbone.key
        if backbone_key(backbone.material) != key:
            raise ValueError(f"key {key} is not the key of the backbone's material")
        if self.has(key):
            return False
        import torch

        self.ensure_store()
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in backbone.weights.items()}, buffer)
        raw = buffer.getvalue()
        digest = hashlib.sha256(raw).hexdigest()
        weights_name = f"weights-{digest[:16]}.pt"
        directory = self.entry_dir(key)
        self.fs.create_dir(directory, recursive=True)
        self._write_atomic(f"{directory}/{weights_name}", raw)
        meta = {
            "format": ENTRY_FORMAT,
            "key": key,
            "material": backbone.material,
            "weights": weights_name,
            "sha256": digest,
            "bytes": len(raw),
            "epochs": backbone.epochs,
            "readout_store": backbone.readout_store,
            "provenance": {"written": _now(), **backbone.provenance},
        }
        self._write_atomic(
            f"{directory}/{ENTRY_FILE}", json.dumps(meta, indent=1, default=_json_number).encode()
        )
        return True

    def ensure_store(self) -> None:
        """Create the root and its STORE.json if they are not there (what `rm` checks before deleting)."""
        if self.is_store():
            return
        self.fs.create_dir(self.root, recursive=True)
        text = json.dumps({"kind": "ecgtune backbone store", "format": ENTRY_FORMAT, "created": _now()})
        self._write_atomic(f"{self.root}/{STORE_FILE}", text.encode())

    def _write_atomic(self, path: str, data: bytes) -> None:
        """Readers see all of `data` or nothing: a temporary file renamed into place on a local disk,
        one object PUT elsewhere."""
        if not self.local:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def write_bytes(self, path: str, data: bytes) -> None:
        """One file under the root, atomically (claims use it)."""
        self._write_atomic(path, data)

    # ---------------------------------------------------------------------------- set aside, remove

    def quarantine(self, key: str) -> str:
        """Move a refused entry aside to .quarantine/<key>-<time>/ (kept for the user to look at) so the
        key can be pretrained and written again. Returns where it went."""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        target = f"{self.root}/{QUARANTINE_DIR}/{key}-{stamp}"
        self.fs.create_dir(target, recursive=True)
        source = self.entry_dir(key)
        for info in self.fs.get_file_info(pafs.FileSelector(source, recursive=True)):
            if info.type == pafs.FileType.File:
                self.fs.copy_file(info.path, f"{target}/{info.path[len(source) + 1 :]}")
        self.fs.delete_dir(source)
        return target

    def remove(self, key: str) -> int:
        """Delete one entry (`ecgtune backbones rm`); the bytes freed. Refuses a folder that is not a
        backbone store, and a key that is not an entry of it."""
        if not self.is_store():
            raise ValueError(f"{self.uri}: not a backbone store (no {STORE_FILE}); nothing removed")
        info = self.fs.get_file_info(self.entry_dir(key))
        if info.type != pafs.FileType.Directory or not self.has(key):
            raise ValueError(f"{self.uri}: no entry {key!r} (see `ecgtune backbones ls {self.uri}`)")
        freed = sum(
            i.size or 0
            for i in self.fs.get_file_info(pafs.FileSelector(self.entry_dir(key), recursive=True))
            if i.type == pafs.FileType.File
        )
        self.fs.delete_dir(self.entry_dir(key))
        return freed


def describe_entry(entry: EntryInfo) -> str:
    """One line of `ecgtune backbones ls`: key, size, and what the backbone was pretrained on."""
    m = entry.material
    model = dict(m.get("model", {}))
    family = model.pop("family", "?")
    knobs = {k: v for k, v in model.items() if k not in ("in_channels", "num_outputs", "signal_length")}
    pre = m.get("pretrain", {})
    p = entry.provenance
    return (
        f"{entry.key}  {entry.bytes / 1e6:8.2f} MB  {family} "
        + " ".join(f"{k}={v}" for k, v in knobs.items())
        + f" | pretrained {pre.get('epochs')} epochs, lr {pre.get('lr')}, "
        f"weight decay {pre.get('weight_decay')}, batch {pre.get('batch_size')}, seed {m.get('seed')}, "
        f"on store {m.get('pretrain_store')}, "
        f"targets {','.join(m.get('targets', []))} | by trial {p.get('trial')} of {p.get('sweep')} "
        f"on {p.get('device', '?')}, {p.get('pretrain_seconds', 0):.0f} s, {p.get('written', '?')}"
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _json_number(value: Any) -> Any:
    """numpy scalars in metrics -> Python numbers (json.dumps' `default`)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

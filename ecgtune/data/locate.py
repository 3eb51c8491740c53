"""Where a spec's stores are: the data root ($ECGTUNE_DATA), and a store's directory below it.

Resolution only looks: it builds nothing. Building the embedded demo stores is an explicit step
(`ecgtune data demo`, or `ecgtune.data.demo.ensure_demo_data`, which `ecgtune sweep`, `train` and
`demo` take before resolving). Inside a Ray job (`ray job submit`) the working directory is a
temporary copy, so the root must be absolute there and a missing store fails at once, naming its path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ecgtune.data.store import PROVENANCE_FILE

if TYPE_CHECKING:
    from ecgtune.spec import StoreSpec

DATA_ENV = "ECGTUNE_DATA"
# Ray's job supervisor sets this in the environment of a submitted job's entrypoint (Ray 2.52-2.60,
# dashboard/modules/job/job_supervisor.py `_get_driver_env_vars`); it removes RAY_JOB_ID from it, and
# RAY_ADDRESS alone is also set by people who run a driver of their own against a cluster.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
RUNTIME_ENV_HINT = (
    "set it in the job's runtime env: `env_vars: {ECGTUNE_DATA: /mnt/ecgtune-data}` in "
    "cluster/runtime_env.yaml (`--runtime-env cluster/runtime_env.yaml`), or "
    '`--runtime-env-json \'{"env_vars": {"ECGTUNE_DATA": "/abs/path"}}\'`'
)
DEMO_STORES = ("deepfake", "ptbxl")


class DataRootError(ValueError):
    """The data root cannot be trusted where ecgtune runs (a relative root inside a Ray job)."""


class StoreNotFoundError(FileNotFoundError):
    """A store a spec names is not on this machine (no finished store at its path)."""


def running_as_ray_job() -> bool:
    """True in the entrypoint of `ray job submit`, whose working directory is a temporary copy."""
    return RAY_JOB_ENV in os.environ


def data_root() -> Path:
    """$ECGTUNE_DATA, default ./data; inside a Ray job it must be absolute (the job's working
    directory is a temporary copy: stores below it would be rebuilt, or missing, on every submission)."""
    value = os.environ.get(DATA_ENV)
    if running_as_ray_job() and not (value and Path(value).expanduser().is_absolute()):
        got = f"{DATA_ENV}={value!r} is relative" if value else f"{DATA_ENV} is not set (default ./data)"
        raise DataRootError(
            f"running as a Ray job in a temporary copy of the submitted directory ({Path.cwd()}), and {got}: "
            f"the stores would be looked for inside that copy. Point {DATA_ENV} at the absolute path where "
            f"the stores live on the cluster: {RUNTIME_ENV_HINT}"
        )
    return Path(value or "data").expanduser().resolve()


def demo_root() -> Path:
    """Where the embedded demo stores live: $ECGTUNE_DATA/demo."""
    return data_root() / "demo"


def resolve_store(store: StoreSpec) -> Path:
    """The directory of a store, not checked (see `require_store`) and never built: a demo store's
    below `demo_root()`, a relative path below the data root, environment variables expanded."""
    if store.demo is not None:
        return demo_root() / store.demo
    path = Path(os.path.expandvars(store.path)).expanduser()
    return path if path.is_absolute() else data_root() / path


def require_store(store: StoreSpec) -> Path:
    """`resolve_store`, and the store must be there: a missing one fails at once, naming the path and
    the command that builds it."""
    path = resolve_store(store)
    if store.demo:
        return _check_store(path, f"ecgtune data demo --root {path.parent}")
    return _check_store(path, f"ecgtune data ptbxl|deepfake|generate ... -o {path}")


def is_store(path: Path) -> bool:
    """A finished store: conversion wrote its provenance file last."""
    return (path / PROVENANCE_FILE).is_file()


def _check_store(path: Path, build: str) -> Path:
    if not is_store(path):
        where = f" ({DATA_ENV}={os.environ[DATA_ENV]})" if DATA_ENV in os.environ else ""
        state = "is not a finished store" if path.exists() else "does not exist"
        raise StoreNotFoundError(
            f"data store {path}{where} {state} (no {PROVENANCE_FILE}); build it there first: `{build}`"
        )
    return path

"""Shared test settings: quiet CPU threading, and Ray kept on loopback with its own auth token."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile

import pytest
import torch

# Two cores are shared with Ray workers in some tests: one intra-op thread keeps CPU timing
# predictable and avoids OpenMP oversubscription stalls.
torch.set_num_threads(1)

# Ray 2.60 on these machines (see shared/notes/ray-2.60-on-these-machines.md): this setting makes
# every Ray socket bind 127.0.0.1; token auth is on by default, so tests use a token file of their own.
_RAY_TMP = tempfile.mkdtemp(prefix="ecgtune-ray-")
atexit.register(shutil.rmtree, _RAY_TMP, ignore_errors=True)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
if "RAY_AUTH_TOKEN_PATH" not in os.environ:
    os.environ["RAY_AUTH_TOKEN_PATH"] = os.path.join(_RAY_TMP, "auth_token")
    with open(os.environ["RAY_AUTH_TOKEN_PATH"], "w") as f:
        f.write(secrets.token_hex(32))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for one test module's sweeps (loopback and token from the settings above)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()

"""A backbone store on an S3-compatible server (moto's server mode, on 127.0.0.1, started here) holds a
sweep's backbones end to end: trials on Ray workers claim, write and load entries through s3://."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time

import pytest
from synthetic import write_trial_stores
from test_backbone_sweeps import summary_of, write_spec

from ecgtune import cli
from ecgtune.backbones import BackboneStore

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return write_trial_stores(tmp_path_factory.mktemp("stores"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path):
    """moto's S3 server on 127.0.0.1, for this test only."""
    # This Python's moto (pip install 'moto[server]'), not whatever `moto_server` is first on PATH.
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto is not installed (pip install 'moto[server]')")
    port = _free_port()
    log = open(tmp_path / "moto.log", "w")
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_a_store_on_s3_holds_the_backbones_end_to_end(stores, tmp_path, s3_server, monkeypatch):
    import pyarrow.fs as pafs
    import ray

    # The endpoint travels in the URI (pyarrow reads it from the query), the credentials in the
    # environment, which the Ray workers started below inherit (as a cluster's nodes would have them).
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "test")
    uri = f"s3://ecgtune-test/backbones?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    pafs.S3FileSystem(endpoint_override=s3_server, scheme="http", allow_bucket_creation=True).create_dir(
        "ecgtune-test"
    )
    storage = tmp_path / "runs"
    spec = write_spec(tmp_path / "s3.yaml", stores, storage, name="s3", backbones=uri)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert cli.main(["sweep", str(spec)]) == 0
    finally:
        ray.shutdown()
    _, summary = summary_of(storage, "s3")
    assert summary["backbones"]["store"] == uri
    assert summary["backbones"]["reused"] >= 1
    entries = list(BackboneStore(uri).entries())
    assert {e.key for e in entries} == {
        t["backbone"]["key"] for t in summary["trials"] if t["backbone"]["origin"] == "pretrained"
    }
    assert not (storage / "backbones").exists(), "a local store was written beside the S3 one"

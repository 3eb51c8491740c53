"""How long a crashed pretrainer's claim keeps the others waiting (docs/benchmarks.md part 4).

A process claims a backbone key in a store (`ecgtune.backbones.acquire`), beats while its "training"
advances, and is SIGKILLed mid-pretraining: no `finally`, no release, as when a node dies. A second
claimant, started at the kill, measures the time until it holds the claim. The bound is
lease + poll + 2 x settle (ecgtune/backbones/claims.py); the settle time is 0.05 s on a local disk and
1.1 s on object storage (whose clock counts whole seconds).

    python -m bench.claim_takeover                   # local disk and moto's S3 server, leases 2 s and 10 s
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from ecgtune.backbones import BackboneStore, Claim, ClaimTiming, acquire, backbone_key

OUT = Path(__file__).resolve().parents[1] / "bench" / "data" / "claim_takeover.json"  # committed
MATERIAL = {"format": 1, "model": {"family": "toy"}, "seed": 0}
HOLDER = textwrap.dedent(
    """
    import sys, time
    from ecgtune.backbones import BackboneStore, ClaimTiming, acquire, backbone_key
    material = {"format": 1, "model": {"family": "toy"}, "seed": 0}
    timing = ClaimTiming(lease_s=float(sys.argv[2]), poll_s=float(sys.argv[3]))
    steps = [0]
    claim = acquire(BackboneStore(sys.argv[1]), backbone_key(material), material, "doomed", timing,
                    progress=lambda: steps[0])
    print("claimed", flush=True)
    while True:  # pretraining, beating, until killed
        steps[0] += 1
        time.sleep(0.05)
    """
)


def takeover_seconds(
    store_uri: str, lease_s: float, poll_s: float = 0.05, alive_s: float | None = None
) -> float:
    """Seconds from SIGKILLing a claim's holder (alive for `alive_s`, default two leases) until another
    claimant holds it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, store_uri, str(lease_s), str(poll_s)],
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        if proc.stdout.readline().strip() != "claimed":
            raise RuntimeError("the holder did not claim the key")
        time.sleep(2 * lease_s if alive_s is None else alive_s)
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        got = acquire(BackboneStore(store_uri), backbone_key(MATERIAL), MATERIAL, "survivor",
                      ClaimTiming(lease_s=lease_s, poll_s=poll_s))  # fmt: skip
        took = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    if not isinstance(got, Claim):
        raise RuntimeError("the survivor found an entry instead of the claim")
    got.release()
    return took


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    import pyarrow.fs as pafs

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
    ).create_dir("claims")
    return proc, f"s3://claims/store?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.claim_takeover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--leases", type=float, nargs="+", default=[2.0, 10.0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rows = []
    moto, s3 = _moto()
    try:
        with tempfile.TemporaryDirectory() as d:
            for where, uri in (("local disk", f"{d}/store"), ("S3 (moto, 127.0.0.1)", s3)):
                settle = 0.05 if where == "local disk" else 1.1
                for lease in args.leases:
                    took = [takeover_seconds(uri, lease) for _ in range(args.repeats)]
                    bound = lease + 0.05 + 2 * settle
                    rows.append({"store": where, "lease_s": lease, "takeover_s": took, "bound_s": bound})
                    times = ", ".join(f"{t:.2f}" for t in took)
                    print(f"{where:<22} lease {lease:4.1f} s: taken over after {times} s (bound {bound:.2f})")
    finally:
        moto.terminate()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

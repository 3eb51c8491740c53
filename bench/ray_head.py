"""A fresh `ray start --head` on 127.0.0.1 for the benchmarks and tests that talk to one, and its stopping.

Every head gets its own temp dir, its own auth token file (token auth is on by default in Ray >= 2.52)
and its own ports, its agents' included: nothing is shared with another Ray on the machine. (With Ray's
default agent ports, a second head's job agent cannot bind while another Ray runs, and every
`ray job submit` then answers "No available agent".) It is stopped by killing the processes of its
temp dir, never `ray stop` (which kills every Ray process of the user on the host).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports on 127.0.0.1. All n sockets are held open while the kernel picks, so no
    port comes back twice (picked one at a time, two of a head's components once got the same port and
    `ray start` refused it)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


@dataclass
class Head:
    temp: Path
    gcs: str  # 127.0.0.1:PORT
    dashboard: str  # http://127.0.0.1:PORT
    token_file: Path
    env: dict[str, str]  # for `ray job ...` and anything else that talks to this head

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def ray(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([RAY, *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and out.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out


def start_head(num_cpus: int = 2, extra_env: dict[str, str] | None = None) -> Head:
    """A head with the dashboard on 127.0.0.1, every socket on loopback, its own token and ports.
    `extra_env` reaches the head's processes (and so every job's) and `Head.env`."""
    temp = Path(tempfile.mkdtemp(prefix="ecgtune-h-", dir="/tmp"))  # short: Ray's socket paths are limited
    token_file = temp / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every socket on 127.0.0.1 (read when Ray is imported)
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
        **(extra_env or {}),
    }
    env.pop("RAY_ADDRESS", None)
    gcs_port, dashboard_port, agent, agent_grpc, metrics, runtime_env, client = free_ports(7)
    head = Head(temp, f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}", token_file, env)
    cmd = [
        "start", "--head", f"--port={gcs_port}", f"--dashboard-port={dashboard_port}",
        "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
        f"--temp-dir={temp}", "--disable-usage-stats", "--include-dashboard=true",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
        f"--ray-client-server-port={client}",
    ]  # fmt: skip
    try:
        head.ray(*cmd)
    except BaseException:
        stop_head(head)
        raise
    return head


def stop_head(head: Head) -> None:
    """Kill the processes whose command line names this head's temp dir, and their children."""
    import psutil

    marker = str(head.temp)
    procs = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                procs[p.pid] = p
                for child in p.children(recursive=True):
                    procs[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in procs.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    shutil.rmtree(head.temp, ignore_errors=True)


def job_api(head: Head, path: str) -> dict:
    """GET the dashboard's job REST API (`/api/jobs/...`) with the head's token: cheap enough to poll,
    unlike a `ray job ...` CLI process per look."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{head.dashboard}{path}", headers={"Authorization": f"Bearer {head.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read().decode())


def job_status(head: Head, submission_id: str) -> str:
    return job_api(head, f"/api/jobs/{submission_id}")["status"]


def job_logs(head: Head, submission_id: str) -> str:
    return job_api(head, f"/api/jobs/{submission_id}/logs")["logs"]


def wait_until(check, timeout: float, every: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    return None

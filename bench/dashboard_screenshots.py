"""The Ray dashboard's job page in a real browser, while a submitted sweep runs and after it ends.

    python -m bench.dashboard_screenshots --data /abs/data     # ECGTUNE_DATA holding the demo stores

Starts a head on 127.0.0.1 (its own temp dir and auth token; token auth stays on), submits
`ecgtune sweep smoke` with `ray job submit --working-dir .`, and drives headless Chromium
(Debian's `chromium`, no browser download) over the DevTools protocol on 127.0.0.1. The dashboard's
web UI accepts the token as the `ray-authentication-token` cookie (what its login form sets through
POST /api/authenticate; Ray 2.60 `_private/authentication/http_token_authentication.py`), so the
script sets that cookie for the dashboard's origin before opening any page. PNGs go to
bench/results/dashboard/ (git-ignored); the head and the browser are stopped by their process ids.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, RESULTS_DIR
from bench.ray_head import job_status, start_head, stop_head, wait_until

OUT = RESULTS_DIR / "dashboard"
COOKIE = "ray-authentication-token"  # ray._private.authentication.authentication_constants
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]  # fmt: skip


class Browser:
    """Headless Chromium driven through the DevTools protocol (one page), with aiohttp's websocket."""

    def __init__(self, width: int, height: int):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise SystemExit("chromium is not installed (Debian: apt-get install -y chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="ecgtune-chromium-"))
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        port_file = self.profile / "DevToolsActivePort"
        if not wait_until(lambda: port_file.is_file() and port_file.read_text().strip(), 60, 0.2):
            self.close()
            raise RuntimeError("chromium did not open its DevTools port")
        port = port_file.read_text().split()[0]
        import urllib.request

        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        self.ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self.loop = asyncio.new_event_loop()
        self.ws = self.session = None
        self.next_id = 0
        self.loop.run_until_complete(self._connect())
        self.call("Page.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    async def _connect(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.ws_url, max_msg_size=0)

    async def _call(self, method: str, params: dict) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=60)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def call(self, method: str, **params) -> dict:
        return self.loop.run_until_complete(self._call(method, params))

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return result.get("result", {}).get("value", "")

    def open(self, url: str, wait_for: str, timeout: float = 60) -> bool:
        """Navigate, then wait until the page's text contains `wait_for` (the app fetches after load)."""
        # A full load every time: between two dashboard URLs that differ only after "#", the app would
        # keep its state, e.g. the token prompt it opened before the cookie was set.
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)
        found = wait_until(lambda: wait_for in self.text(), timeout, 0.5)
        time.sleep(3)  # let the tables and charts finish drawing
        return bool(found)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if self.ws is not None:
            self.loop.run_until_complete(self.ws.close())
            self.loop.run_until_complete(self.session.close())
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        shutil.rmtree(self.profile, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("ECGTUNE_DATA", "data")))
    p.add_argument("--spec", default="smoke", help="a spec file or a shipped sweep's name")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--size", default="1600x1000", help="browser window WIDTHxHEIGHT")
    args = p.parse_args()
    data = args.data.expanduser().resolve()
    if not (data / "demo" / "ptbxl" / "provenance.json").is_file() and "smoke" in args.spec:
        raise SystemExit(
            f"no demo stores below {data}: build them first with `ecgtune data demo --root {data}/demo`"
        )
    width, height = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    storage = Path(tempfile.mkdtemp(prefix="ecgtune-shots-runs-"))
    head = start_head(extra_env={"PYTHONPATH": str(REPO)})
    browser = None
    shots: list[tuple[Path, str]] = []
    try:
        env_json = json.dumps({"env_vars": {"ECGTUNE_DATA": str(data)}})
        out = head.ray(
            "job", "submit", "--no-wait", "--address", head.dashboard, "--working-dir", str(REPO),
            "--runtime-env-json", env_json, "--",
            sys.executable, "-m", "ecgtune", "sweep", args.spec, "--storage-path", str(storage),
        )  # fmt: skip
        job = re.search(r"raysubmit_[A-Za-z0-9]+", out.stdout + out.stderr).group(0)
        browser = Browser(width, height)

        def shot(name: str, url: str, wait_for: str) -> None:
            ok = browser.open(url, wait_for)
            path = args.out / name
            browser.screenshot(path)
            shots.append((path, f"{time.strftime('%H:%M:%S')} {url} ({'ok' if ok else 'text not found'})"))

        shot("0-without-token.png", f"{head.dashboard}/#/jobs", "token")  # what a browser without it gets
        # The cookie the dashboard's login form would set: HttpOnly, for this origin only.
        browser.call("Network.setCookie", name=COOKIE, value=head.token, url=head.dashboard, httpOnly=True)
        page = f"{head.dashboard}/#/jobs/{job}"
        wait_until(lambda: any(storage.glob("*/*/result.json")), 300)  # trials have reported
        shot("1-job-running.png", page, job)
        shot("2-jobs-list-running.png", f"{head.dashboard}/#/jobs", job)
        wait_until(lambda: job_status(head, job) in ("SUCCEEDED", "FAILED", "STOPPED"), 600, 2)
        status = job_status(head, job)
        shot("3-job-finished.png", page, status)
        shot("4-overview-finished.png", f"{head.dashboard}/#/overview", job)
        print(f"job {job}: {status}")
    finally:
        if browser is not None:
            browser.close()
        stop_head(head)
        shutil.rmtree(storage, ignore_errors=True)
    for path, note in shots:
        print(f"{path}  {note}")


if __name__ == "__main__":
    main()

"""optuna-dashboard on the Optuna study of an experiment directory, while its sweep runs or after.

    ecgtune dashboard runs/smoke-20261207-101500            # http://127.0.0.1:8080/dashboard/studies/0

The study is found through the experiment's study.json (`ecgtune.study`); the journal file or RDB it
names is read while the sweep's searcher writes it: optuna-dashboard rereads a study's trials at most
every 2 s, and Optuna's journal reader skips a line still being appended, so trials appear as they start
and end, also when `ecgtune sweep --resume` goes on writing the same journal. No Ray here.

Two choices differ from `optuna-dashboard`'s own command:
- Loopback only: the server binds 127.0.0.1, never another interface. From another machine, forward
  the port (`ssh -L 8080:127.0.0.1:8080 HOST`).
- Read-only: optuna-dashboard can create, rename and delete studies and mark running trials complete or
  failed. The sweep's searcher owns its study: a trial marked finished from the browser makes the
  searcher's next `report` or `tell` on it raise (Optuna updates no finished trial), which ends the
  sweep. So every request but GET and HEAD is refused with 405.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ecgtune.study import StudyLocation, read_study_pointer

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8080  # optuna-dashboard's own default
READ_ONLY_METHODS = ("GET", "HEAD")


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    # The page polls the API while plots load: one thread per request, as optuna-dashboard's command
    # runs wsgiref. Daemon threads: a browser holding a connection open never keeps the process alive.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # The page polls every few seconds: a line per request would bury the URL line in the terminal.
        pass


class StudyDashboard:
    """optuna-dashboard bound to 127.0.0.1:`port` for one study. `serve_forever()` blocks (Ctrl-C ends
    it); `start()` serves from a thread instead, `stop()` ends either. Also a context manager."""

    def __init__(self, location: StudyLocation, study_id: int, server: WSGIServer):
        self.location = location
        self.study_id = study_id
        self.server = server
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The study's page."""
        return f"{self.base_url}/dashboard/studies/{self.study_id}"

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.server.server_close()

    def start(self) -> StudyDashboard:
        self._thread = threading.Thread(target=self.serve_forever, name="optuna-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()  # returns once serve_forever has returned
            self._thread.join()
            self._thread = None
        else:
            self.server.server_close()

    def __enter__(self) -> StudyDashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def open_dashboard(experiment: str | os.PathLike[str], port: int = DEFAULT_PORT) -> StudyDashboard:
    """optuna-dashboard for the study of the experiment directory `experiment` (a path or URI), bound to
    127.0.0.1:`port` (0: a free port) and not yet serving. Refuses, in one line naming the path, an
    experiment without study.json, a journal file that is not there and a study the storage lacks."""
    import optuna_dashboard

    location = read_study_pointer(experiment)
    storage = _open_existing(location, experiment)
    try:
        study_id = storage.get_study_id_from_name(location.name)
    except KeyError:
        raise ValueError(
            f"{location.storage}: holds no study {location.name!r} (named by {experiment}'s study.json)"
        ) from None
    app = _read_only(optuna_dashboard.wsgi(storage))
    try:
        server = make_server(LOOPBACK, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as e:
        raise OSError(
            e.errno, f"cannot listen on {LOOPBACK}:{port}: {e.strerror or e}; choose another --port"
        ) from None
    return StudyDashboard(location, study_id, server)


def _open_existing(location: StudyLocation, experiment: str | os.PathLike[str]) -> Any:
    """The study's storage. A journal must exist already: Optuna would create an empty one, and the
    dashboard would then show no study instead of saying where the sweep's study was expected."""
    if location.is_journal and not Path(location.storage).is_file():
        raise FileNotFoundError(
            f"{location.storage}: no Optuna journal file there (named by {experiment}'s study.json; the "
            "driver writes it on its own machine, and a sweep of fixed variants has no study)"
        )
    return location.open()


def _read_only(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI app, refusing every method that could change the study (see the module docstring)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") in READ_ONLY_METHODS:
            return app(environ, start_response)
        body = json.dumps({"reason": "read-only: the sweep's searcher owns this study"}).encode()
        start_response(
            "405 Method Not Allowed",
            [("Content-Type", "application/json"), ("Allow", ", ".join(READ_ONLY_METHODS))],
        )
        return [body]

    return guarded

"""Progress of a long data build: a bar on a terminal, and plain lines everywhere else.

tqdm redraws one line with carriage returns, which a Ray job log, a CI log or `| tee` shows as
nothing (or as one unreadable line) until the end. Off a terminal, `Progress` prints a line such as
`generating+labelling deepfake: 256/640 ECGs (40%), 31 ECG/s, about 12 s left` at most every
`every_s` seconds, and one when done.
"""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    def __init__(self, total: int, what: str, *, enabled: bool = True, every_s: float = 10.0,
                 stream: IO[str] | None = None, unit: str = "ECG"):  # fmt: skip
        self.total, self.what, self.unit, self.every_s = int(total), what, unit, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.started = self._last = time.monotonic()
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, unit=unit, desc=what, file=self.stream)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / max(self.total, 1)
        print(
            f"{self.what}: {self.done}/{self.total} {self.unit}s ({pct:.0f}%), {rate:.0f} {self.unit}/s, "
            f"about {left:.0f} s left",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            took = time.monotonic() - self.started
            print(f"{self.what}: {self.done} {self.unit}s in {took:.0f} s", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

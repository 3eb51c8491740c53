"""A sweep's progress on the console: one aligned line per epoch a trial reports, one when it ends."""

from __future__ import annotations

import sys
import time
from typing import IO

from ecgtune.experiment import BACKBONE_FROM, BACKBONE_KEY, MAE_KEY, REUSED_EPOCH


class SweepLog:
    """A sweep's progress as one aligned line per epoch a trial reports, and one when a trial ends.

    Readable the same on a terminal and in a Ray job's log (what the dashboard shows): no redraws,
    no full status table every few seconds, only what changed. Knows nothing of Ray: the driver's
    Tune callback feeds it plain result dicts.
    """

    def __init__(self, targets: tuple[str, ...] | list[str], stream: IO[str] | None = None):
        from ecgtune.targets import TARGETS

        self.targets = list(targets)
        self._stream = stream  # None: sys.stdout when printing (Tune pickles its callbacks; a stream won't)
        self.heads = [f"{TARGETS[t].title} {TARGETS[t].unit}" for t in self.targets]
        self._printed_header = False

    def _print(self, text: str) -> None:
        print(text, file=self._stream if self._stream is not None else sys.stdout, flush=True)

    def header(self) -> None:
        cells = " ".join(f"{h:>9}" for h in self.heads)
        self._print(f"{'time':<8} {'trial':<14} {'stage':<8} {'epoch':>5} {'objective':>9} {cells}  params")
        self._printed_header = True

    def result(self, trial: str, params: dict[str, object], result: dict[str, object]) -> None:
        if not self._printed_header:
            self.header()
        maes = " ".join(f"{_fmt(result.get(MAE_KEY.format(t))):>9}" for t in self.targets)
        epoch = f"{result.get('epoch', '?')}/{result.get('total_epochs', '?')}"
        # A pretraining epoch taken from the backbone store, not trained here: say whose it is.
        reused = f"  reused backbone {result.get(BACKBONE_KEY)} from {result.get(BACKBONE_FROM)}"
        self._print(
            f"{time.strftime('%H:%M:%S')} {trial:<14} {str(result.get('stage', '')):<8} {epoch:>5} "
            f"{_fmt(result.get('objective'), 3):>9} {maes}  {_params(params)}"
            + (reused if result.get(REUSED_EPOCH) else "")
        )

    def ended(
        self, trial: str, status: str, epochs: object, objective: object, error: str | None = None
    ) -> None:
        tail = f": {error}" if error else ""
        self._print(
            f"{time.strftime('%H:%M:%S')} {trial:<14} {status} after {epochs} epochs, objective "
            f"{_fmt(objective, 3)}{tail}"
        )


def _fmt(value: object, digits: int = 1) -> str:
    try:
        return f"{float(value):.{digits}f}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"


def _params(params: dict[str, object]) -> str:
    """`key=value` pairs, model knobs without their `model.` prefix: `num_blocks=3 finetune.lr=0.003`."""

    def short(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k.removeprefix('model.')}={short(v)}" for k, v in params.items())

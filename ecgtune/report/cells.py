"""What the markdown and the plots share: table cells (a value, a row, a table), and the trial to show
where none has trained every epoch."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ecgtune.experiment.reader import mae_column
from ecgtune.targets import TARGETS


def cell(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return f"{v:.3g}" if v != 0 and (abs(v) < 0.01 or abs(v) >= 1e5) else f"{v:.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def target_head(targets: Sequence[str], suffix: str = "") -> list[str]:
    return [f"{TARGETS[t].title}{suffix} ({TARGETS[t].unit})" for t in targets]


def mae_cells(row: Mapping[str, Any], targets: Sequence[str], which: str = "last") -> list[str]:
    return [cell(row.get(mae_column(t, which))) for t in targets]


def param_cells(row: Mapping[str, Any], params: Sequence[str]) -> list[str]:
    return [cell(row.get(p), 3) for p in params]


def fidelity(row: Mapping[str, Any]) -> str:
    return f"{row['epochs']}/{row['max_epochs']}"


def unique(items: Any) -> list[Any]:
    seen: list[Any] = []
    for i in items:
        if i not in seen:
            seen.append(i)
    return seen


def best_at_highest_fidelity(group: pd.DataFrame) -> pd.Series | None:
    g = group[group["objective_last"].notna()]
    if not len(g):
        return None
    top = g[g["epochs"] == g["epochs"].max()]
    return top.loc[top["objective_last"].idxmin()]


def choice_index(choices: Sequence[Any], value: Any) -> int | None:
    """Position of `value` among `choices`; True is not 1 here, but 8.0 (a float column) is 8."""
    for i, c in enumerate(choices):
        if isinstance(c, bool) == isinstance(value, bool) and c == value:
            return i
    return None


def from_cell(v: Any) -> Any:
    """numpy scalars -> Python; NaN (a missing cell) -> None."""
    if isinstance(v, np.generic):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v

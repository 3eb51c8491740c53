"""Reading cluster/grafana/ecgtune-dashboard.json as Grafana does: panels, their PromQL, variables.

Used by the fast name checks (test_monitoring.py) and by the Prometheus end-to-end test
(test_monitoring_prometheus.py), which runs every query against a real server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BOARD = REPO / "cluster" / "grafana" / "ecgtune-dashboard.json"
SERIES_RE = re.compile(r"\bray_[A-Za-z0-9_:]+")


@dataclass(frozen=True)
class Query:
    where: str  # "panel 'Objective per trial'" or "variable trial"
    expr: str
    legend: str | None  # legendFormat
    instant: bool  # Grafana evaluates it once, at the end of the time range
    repeat: str | None  # the variable a repeated panel is drawn once per value of

    @property
    def series(self) -> set[str]:
        return set(SERIES_RE.findall(self.expr))

    @property
    def legend_labels(self) -> set[str]:
        return set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", self.legend or ""))

    @property
    def by_labels(self) -> set[str] | None:
        """The labels an outer `by (...)` keeps; None when the expression does not aggregate."""
        groups = re.findall(r"\bby\s*\(([^)]*)\)", self.expr)
        if not groups:
            return None
        return {g.strip() for g in groups[0].split(",") if g.strip()}


def load_board() -> dict[str, Any]:
    return json.loads(BOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def walk(items: list[dict[str, Any]]) -> None:
        for p in items:
            if p.get("type") != "row":
                out.append(p)
            walk(p.get("panels", []))  # collapsed rows

    walk(board["panels"])
    return out


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def variable_queries(board: dict[str, Any]) -> list[Query]:
    out = []
    for v in variables(board).values():
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append(Query(f"variable {v['name']}", q, None, True, None))
    return out


def panel_queries(board: dict[str, Any]) -> list[Query]:
    out = []
    for p in panels(board):
        for t in p.get("targets", []):
            instant = bool(t.get("instant")) and not t.get("range", False)
            where = f"panel {p['title']!r}"
            out.append(Query(where, t["expr"], t.get("legendFormat"), instant, p.get("repeat")))
    return out


def labels_in(expr: str) -> set[str]:
    """Every label an expression names: in matchers, `by (...)`/`without (...)`, `label_values(..., x)`."""
    labels: set[str] = set()
    for matcher in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matcher))
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {g.strip() for g in group.split(",") if g.strip()}
    for label in re.findall(r"label_values\([^,()]*(?:\{[^}]*\})?\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", expr):
        labels.add(label)
    return labels


def substitute(expr: str, values: dict[str, str], range_s: int) -> str:
    """Grafana's variable interpolation for these queries: `$name` -> a regex value, `$__range` -> `<N>s`."""
    expr = expr.replace("$__range", f"{range_s}s")
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    if "$" in expr:
        raise AssertionError(f"uninterpolated variable left in {expr!r}")
    return expr

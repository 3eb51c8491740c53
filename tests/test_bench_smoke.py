"""The benchmark scripts run: each `python -m bench.<script> --quick` exits 0, writes JSON with the
expected keys and prints a table last. No timing is asserted: quick numbers are not measurements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# script -> keys its JSON "results" must have
SCRIPTS = {
    "input_pipeline": ["n", "pairs", "min_ratio", "goal_met", "same_signals"],
    "data_stalls": ["n", "configs"],
    "throughput": ["n", "loops", "equal_mathematics"],
    "data_prep": ["generation", "labelling", "conversion", "reading"],
    # On a CPU (CI): the GPU script's code paths run on the CPU, packing included.
    "gpu": ["device", "models", "precision", "residency", "settings", "study", "packing"],
    "simulate_speed": ["generation", "writing", "labels"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_quick_mode_runs_and_prints_a_table(script: str, tmp_path: Path) -> None:
    out = tmp_path / f"{script}.json"
    # bench/ is a package of this checkout: on PYTHONPATH, as `python -m` from the repository root has it.
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{script}", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # the scripts must not depend on the working directory
        env=env,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    payload = json.loads(out.read_text())
    assert {"script", "quick", "args", "machine", "results", "tables"} <= set(payload)
    assert payload["script"] == script and payload["quick"] is True
    assert {"cpu_model", "cores", "torch", "numpy", "date"} <= set(payload["machine"])
    missing = [k for k in SCRIPTS[script] if k not in payload["results"]]
    assert not missing, f"{script}: results lack {missing}"
    assert payload["tables"] and all(t["headers"] and t["rows"] for t in payload["tables"])

    # The last printed lines are a Markdown table: header, rule, one line per row of the last table.
    lines = proc.stdout.rstrip("\n").splitlines()
    last = payload["tables"][-1]
    tail = lines[-(len(last["rows"]) + 2) :]
    assert all(line.startswith("|") and line.endswith("|") for line in tail), "\n".join(lines[-10:])
    assert set(tail[1]) <= set("|-:"), tail[1]
    assert [c.strip() for c in tail[0].strip("|").split("|")] == last["headers"]

"""Print the tables of benchmark JSON files as Markdown (for docs/benchmarks.md).

python -m bench.tables bench/results/*.json
"""

from __future__ import annotations

import json
import sys


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path) as f:
            d = json.load(f)
        m = d.get("machine", {})
        print(f"<!-- {path}: {d.get('script')} {' '.join(d.get('argv', []) or [])} -->")
        cpu, cores, torch, date = m.get("cpu_model"), m.get("cores"), m.get("torch"), m.get("date")
        load = m.get("load_average_1_5_15")
        print(
            f"Machine: {cpu}, {cores} cores, torch {torch}, {date}, commit {m.get('git_commit')}, load {load}"
        )
        print()
        for t in d.get("tables", []):
            if t.get("title"):
                print(f"**{t['title']}**\n")
            print("| " + " | ".join(t["headers"]) + " |")
            print("|" + "---|" * len(t["headers"]))
            for r in t["rows"]:
                print("| " + " | ".join(r) + " |")
            print()


if __name__ == "__main__":
    main(sys.argv[1:])

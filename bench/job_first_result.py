"""`ray job submit` of a sweep on a fresh head: seconds from submission to the first trial result.

    python -m bench.job_first_result --data /abs/data             # this checkout, ECGTUNE_DATA=/abs/data
    python -m bench.job_first_result --code /tmp/old-checkout      # another checkout, README's command as is

Starts a head on 127.0.0.1 (its own temp dir and token), submits
`ecgtune sweep SPEC --storage-path <tmp>` with `--working-dir CODE` (plus
`--runtime-env-json '{"env_vars": {"ECGTUNE_DATA": DATA}}'` when --data is given), and polls: the job's
log (when it first shows a line of ecgtune's own), the storage path (when the first trial's
result.json has a line) and the job's status. The head is stopped by its process ids afterwards.
Writes JSON (--out) and prints one line.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO
from bench.ray_head import job_logs, job_status, start_head, stop_head


def first_result(storage: Path) -> bool:
    return any(f.stat().st_size > 0 for f in storage.glob("*/*/result.json"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--code", type=Path, default=REPO, help="directory submitted as --working-dir")
    p.add_argument("--data", type=Path, help="ECGTUNE_DATA for the job (absolute); default: none set")
    p.add_argument(
        "--spec", default="smoke", help="a shipped sweep's name, or a spec path relative to --code"
    )
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="ecgtune-jobruns-"))
    head = start_head(extra_env={"PYTHONPATH": str(args.code.resolve())})
    record: dict = {"code": str(args.code), "data": str(args.data) if args.data else None, "spec": args.spec}
    try:
        cmd = ["job", "submit", "--no-wait", "--address", head.dashboard, "--working-dir", str(args.code)]
        if args.data:
            cmd += ["--runtime-env-json", json.dumps({"env_vars": {"ECGTUNE_DATA": str(args.data)}})]
        entry = [sys.executable, "-m", "ecgtune", "sweep", args.spec, "--storage-path", str(storage)]
        t0 = time.time()
        out = head.ray(*cmd, "--", *entry)
        submission = re.search(r"raysubmit_[A-Za-z0-9]+", out.stdout + out.stderr).group(0)
        record["submission_id"] = submission
        seen_log = seen_result = None
        status = "PENDING"
        log_size, log_changed, silences = 0, 0.0, []  # the job log's quiet spells while it runs
        while time.time() - t0 < args.timeout:
            now = time.time() - t0
            if seen_result is None and first_result(storage):
                seen_result = now
            log = job_logs(head, submission)
            if len(log) != log_size:
                silences.append(now - log_changed)
                log_size, log_changed = len(log), now
            if seen_log is None:
                # Lines after Ray's own "Running entrypoint ..." are the driver's.
                tail = (
                    log.split("Running entrypoint", 1)[-1].splitlines()[1:]
                    if "Running entrypoint" in log
                    else []
                )
                if any(line.strip() for line in tail):
                    seen_log = now
            status = job_status(head, submission)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(0.5)
        record.update(
            status=status,
            end_s=round(time.time() - t0, 1),
            first_driver_log_line_s=None if seen_log is None else round(seen_log, 1),
            first_trial_result_s=None if seen_result is None else round(seen_result, 1),
            longest_log_silence_s=round(max(silences, default=0.0), 1),
        )
        record["log_tail"] = job_logs(head, submission).splitlines()[-15:]
    finally:
        stop_head(head)
        shutil.rmtree(storage, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "log_tail"}))
    print("\n".join(record["log_tail"]))


if __name__ == "__main__":
    main()

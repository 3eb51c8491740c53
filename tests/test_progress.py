"""Progress as people read it: plain lines in logs, one aligned line per sweep event."""

from __future__ import annotations


def test_progress_prints_plain_lines_off_a_terminal():
    """A job log or CI log is not a terminal: it gets readable lines, not carriage-return redraws."""
    import io

    from ecgtune.progress import Progress

    out = io.StringIO()
    with Progress(10, "building x", every_s=0.0, stream=out) as p:
        for _ in range(10):
            p.update(1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("building x: 1/10 ECGs (10%)")
    assert lines[-1].startswith("building x: 10 ECGs in")
    silent = io.StringIO()
    with Progress(3, "quiet", enabled=False, every_s=0.0, stream=silent) as p:
        p.update(3)
    assert silent.getvalue() == ""


def test_sweep_log_is_one_aligned_line_per_epoch_and_per_ended_trial():
    import io

    from ecgtune.sweep_log import SweepLog

    out = io.StringIO()
    log = SweepLog(["hr", "qrs"], stream=out)
    result = {"stage": "finetune", "epoch": 3, "total_epochs": 5, "objective": 0.8123,
              "ptbxl_val_mae_hr": 4.56, "ptbxl_val_mae_qrs": 9.87}  # fmt: skip
    log.result("trial_ab12", {"finetune.lr": 0.00123, "model.num_blocks": 3}, result)
    log.ended("trial_ab12", "stopped", 3, 0.8123)
    header, row, end = out.getvalue().splitlines()
    assert header.split()[:5] == ["time", "trial", "stage", "epoch", "objective"] and "QRS ms" in header
    cells = ["trial_ab12", "finetune", "3/5", "0.812", "4.6", "9.9", "finetune.lr=0.00123", "num_blocks=3"]
    assert row.split()[1:] == cells
    assert header.index("objective") + len("objective") == row.index("0.812") + len("0.812")  # aligned
    assert end.split()[1:] == ["trial_ab12", "stopped", "after", "3", "epochs,", "objective", "0.812"]


def test_sweep_log_pickles_as_tune_pickles_its_callbacks():
    import pickle

    from ecgtune.sweep_log import SweepLog

    log = pickle.loads(pickle.dumps(SweepLog(["hr"])))
    log.ended("t1", "finished", 3, 0.5)  # prints to the process's stdout

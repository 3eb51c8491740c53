"""Writing a report: report.md, trials.csv and the PNG plots, into a local directory or a URI."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from ecgtune.experiment import Experiment
from ecgtune.paths import claim_output_dir, marker_kind, write_marker
from ecgtune.report.baseline import load_experiment
from ecgtune.report.importance import param_importances
from ecgtune.report.markdown import markdown
from ecgtune.report.plots import write_plots

REPORT_DIR = "report"


def report_experiment(
    path: str | os.PathLike[str], outdir: str | os.PathLike[str] | None = None, top_k: int = 5
) -> list[str]:
    """Load an experiment and write its report; return where the files went.

    `outdir` defaults to `<experiment>/report`. A URI outdir (or the default for a URI experiment) is
    filled through pyarrow.fs from a local temporary directory.
    """
    experiment = load_experiment(path)
    target = os.fspath(outdir) if outdir is not None else f"{os.fspath(path).rstrip('/')}/{REPORT_DIR}"
    if "://" not in target:
        return [str(p) for p in write_report(experiment, target, top_k=top_k)]
    fs, root = pafs.FileSystem.from_uri(target)
    with tempfile.TemporaryDirectory() as tmp:
        written = write_report(experiment, tmp, top_k=top_k)
        fs.create_dir(root, recursive=True)
        pafs.copy_files(tmp, root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return [f"{target.rstrip('/')}/{p.name}" for p in written]


def write_report(experiment: Experiment, outdir: str | os.PathLike[str], top_k: int = 5) -> list[Path]:
    """Write report.md, trials.csv and the PNG plots into the local directory `outdir`; return them."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1 (got {top_k})")
    out = claim_report_dir(Path(outdir))
    written = [out / "trials.csv"]
    experiment.trials.to_csv(written[0], index=False)
    importances, imp_notes = param_importances(experiment)
    plots, plot_notes = write_plots(experiment, importances, out, top_k)
    text = markdown(experiment, top_k, importances, [*imp_notes, *plot_notes], plots)
    (out / "report.md").write_text(text, encoding="utf-8")
    return [out / "report.md", *written, *plots]


def claim_report_dir(out: Path) -> Path:
    """The report directory, checked: reports are rewritten only in a directory ecgtune marked as one.

    A directory of only report files, written before directories were marked, is adopted."""
    if out.is_dir() and marker_kind(out) is None:
        names = [p.name for p in out.iterdir()]
        ours = all(n in ("report.md", "trials.csv") or n.endswith(".png") for n in names)
        if "report.md" in names and ours:
            write_marker(out, "report")
    return claim_output_dir(out, "report")

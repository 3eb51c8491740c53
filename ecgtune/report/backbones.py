"""report.md's section on pretrained backbones: per trial, whether it pretrained its backbone or reused
one from the store (and whose), and what the store saved the sweep."""

from __future__ import annotations

import pandas as pd

from ecgtune.experiment import Experiment
from ecgtune.report.cells import cell, table


def backbone_section(exp: Experiment) -> str:
    t = exp.trials
    if "backbone" not in t or not t["backbone"].notna().any():
        return "No trial went through a backbone store (no pretraining, or run.reuse_backbones false)."
    used = t[t["backbone"].notna()]
    reused = used[used["backbone"] == "reused"]
    trained = int(used["pretrain_epochs_trained"].sum())
    needed = int(used["pretrain_epochs_reported"].sum())
    saved = float(pd.to_numeric(reused["saved_s"], errors="coerce").fillna(0).sum())
    store = exp.spec.run.backbones if exp.spec is not None else None
    lines = [
        f"- store: `{store}`" if store else "- store: (not recorded)",
        f"- {len(used) - len(reused)} trials pretrained their backbone, "
        f"{len(reused)} reused one from the store",
        f"- pretraining epochs trained: {trained} of the {needed} the trials needed "
        f"({_share(trained, needed)}); pretraining seconds saved: {saved:.0f} "
        "(what the reused backbones' pretraining took where it ran)",
        "",
    ]
    rows = [
        [
            r["trial_id"],
            _origin(r),
            f"{int(r['pretrain_epochs_trained'])} of {int(r['pretrain_epochs_reported'])}",
            cell(r["saved_s"], 0) if r["backbone"] == "reused" else "",
        ]
        for _, r in used.iterrows()
    ]
    lines.append(table(["trial", "backbone", "pretraining epochs trained of needed", "seconds saved"], rows))
    return "\n".join(lines)


def _origin(r: pd.Series) -> str:
    if r["backbone"] == "reused":
        return f"reused `{r['backbone_key']}` from {r['backbone_from']}"
    return f"pretrained `{r['backbone_key']}`"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"

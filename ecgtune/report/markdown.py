"""report.md: the sweep's rankings at each fidelity, failures, baseline, published figures and
importance, as markdown tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ecgtune.experiment import EPOCH, MAE_KEY, OBJECTIVE, STATUS_MEANING, STATUSES, Experiment
from ecgtune.experiment.reader import mae_column
from ecgtune.experiment.results import number
from ecgtune.report.backbones import backbone_section
from ecgtune.report.cells import (
    best_at_highest_fidelity,
    cell,
    fidelity,
    mae_cells,
    param_cells,
    table,
    target_head,
    unique,
)
from ecgtune.report.references import REFERENCES, STUDY_NOTE
from ecgtune.spec import Spec, describe_space
from ecgtune.targets import TARGETS


def markdown(
    exp: Experiment,
    top_k: int,
    importances: Mapping[str, Mapping[str, float]],
    extra_notes: Sequence[str],
    plots: Sequence[Path],
) -> str:
    t, targets, params = exp.trials, exp.targets, list(exp.sampled)
    full = t[t["full_fidelity"] & t["objective_last"].notna()].sort_values("objective_last")
    counts = t["status"].value_counts()
    tol = ", ".join(f"{TARGETS[x].title} {TARGETS[x].tolerance:g} {TARGETS[x].unit}" for x in targets)
    title = exp.spec.name if exp.spec is not None else exp.name
    md = [f"# Sweep report: {title}", ""]
    md += [
        f"- experiment: `{exp.path}`",
        "- state: "
        + (
            "ended (summary.json written by the driver)"
            if exp.ended
            else "**running or interrupted** (no summary.json yet): a partial view"
        ),
        f"- trials: {len(t)} — " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES),
        f"- epochs per trial at full fidelity: {exp.max_epochs}"
        + (_stage_split(exp.spec) if exp.spec is not None else ""),
        f"- models: {', '.join(f'{m} ({f})' for m, f in unique(zip(t['model'], t['family'], strict=True)))}",
    ]
    for w in (exp.summary or {}).get("warm_start") or []:
        md.append(
            f"- warm start: {w['trials']} trials ({w['complete']} finished, {w['pruned']} stopped) "
            f"of `{w['run']}`"
        )
    devices = t["device"].dropna().value_counts() if "device" in t else pd.Series(dtype=int)
    if len(devices):  # a GPU sweep whose trials ran on the CPU shows here (resources.cpu_fallback)
        md.append("- trained on: " + ", ".join(f"{d} ({n} trials)" for d, n in devices.items()))
    if exp.spec is not None and exp.spec.search is not None and exp.spec.search.space:
        md += ["", "Searched parameters:", "", "```", describe_space(exp.spec.search.space), "```"]
    md += [
        "",
        "Every ecgtune number below is measured on the PTB-XL validation fold: MAE per target in its unit; "
        f"objective = mean over targets of MAE / tolerance ({tol}). *Last* is a trial's last "
        "reported epoch (the model its checkpoint holds); *best* is its epoch with the lowest "
        "objective, chosen on the same validation fold and so slightly optimistic. Trials are compared "
        "only at the same number of epochs trained. Status: "
        + "; ".join(f"*{s}*: {STATUS_MEANING[s]}" for s in STATUSES)
        + ".",
    ]

    lengths = sorted(set(full["max_epochs"]))
    length = f"{lengths[0]} epochs" if len(lengths) == 1 else "each trial its own epochs"
    md += ["", f"## Full-fidelity ranking ({length if len(full) else f'{exp.max_epochs} epochs'})", ""]
    if len(full):
        head = [
            "rank",
            "trial",
            "model",
            *params,
            "objective",
            *target_head(targets),
            "best objective (epoch)",
        ]
        ranks = full["objective_last"].rank(method="min").astype(int)
        rows = [
            [
                str(ranks[i]),
                r["trial_id"],
                cell(r["model"]),
                *param_cells(r, params),
                cell(r["objective_last"], 3),
                *mae_cells(r, targets),
                f"{cell(r['objective_best'], 3)} ({cell(r['best_epoch'])})",
            ]
            for i, r in full.iterrows()
        ]
        md.append(table(head, rows[: max(top_k, 20)]))
        if len(rows) > max(top_k, 20):
            md.append(f"\n… and {len(rows) - max(top_k, 20)} more in trials.csv.")
    else:
        md.append("No trial has trained every epoch yet; see the rankings at each fidelity below.")

    md += ["", "## Best trial per model family", ""]
    md.append(_best_per_family(t, targets))
    md += ["", "## Best trial per target", ""]
    md.append(_best_per_target(t, full, targets))
    md += ["", f"## Spread across the top {top_k} full-fidelity trials", ""]
    md.append(_spread(full.head(top_k), targets))
    md += ["", "## Ranking at each fidelity (ASHA rungs)", ""]
    md.append(_rungs(exp, top_k))
    md += ["", "## All trials", ""]
    md.append(_all_trials(exp))
    md += ["", "## Pretrained backbones", ""]
    md.append(backbone_section(exp))
    failed = t[t["status"] == "error"]
    md += ["", "## Failed trials", ""]
    if len(failed):
        md.append(
            table(
                ["trial", "epochs reached", "failures", "error (last line of its last failure)"],
                [
                    [r["trial_id"], fidelity(r), str(r["failures"]), f"`{cell(r['error'])}`"]
                    for _, r in failed.iterrows()
                ],
            )
        )
    else:
        md.append("None.")
    recovered = t[(t["status"] != "error") & (t["failures"] > 0)]
    if len(recovered):
        md.append(
            "\nRecovered after failures (retried from a checkpoint): "
            + ", ".join(
                f"{r['trial_id']} ({r['failures']}× `{cell(r['error'])}`)" for _, r in recovered.iterrows()
            )
        )
    md += ["", "## Against the mean predictor and the label-noise floor", ""]
    if exp.baseline is not None:
        rows = []
        if len(full):
            best = full.iloc[0]
            objective = cell(best["objective_last"], 3)
            rows.append(["best full-fidelity trial", objective, *mae_cells(best, targets)])
            rows.append(
                [
                    "… as % of the mean predictor",
                    "",
                    *[_percent(number(best.get(mae_column(x))), exp.baseline.get(x)) for x in targets],
                ]
            )
        rows.append(
            [
                "mean predictor (training mean for every ECG)",
                cell(exp.baseline.get("objective"), 3),
                *[cell(exp.baseline.get(x)) for x in targets],
            ]
        )
        floor = exp.floor or {}
        floor_cells = [cell(floor.get(x)) for x in targets]
        rows.append(["label-noise floor (a perfect model's MAE)", "", *floor_cells])
        md.append(table(["", "objective", *target_head(targets)], rows))
        md.append(
            "\nMAE on the validation split. The floor is known where the data's source knows its label "
            "noise (simulated data: the noise added to exact labels); — elsewhere."
        )
    else:
        md.append(
            "Not available: results hold no baseline and the fine-tuning store was not found here. "
            "Compute it with `ecgtune.report.training_mean_baseline(store, targets)` and set "
            "`Experiment.baseline` before `write_report`."
        )
    md += ["", "## Published figures beside this sweep", ""]
    md.append(_references(exp, full, targets))
    md += ["", "## Hyperparameter importance (fANOVA)", ""]
    if importances:
        labels = list(importances)
        names = sorted(
            {k for v in importances.values() for k in v},
            key=lambda k: -max(v.get(k, 0.0) for v in importances.values()),
        )
        md.append(
            table(
                ["parameter", *labels],
                [[n, *[cell(importances[lb].get(n), 3) for lb in labels]] for n in names],
            )
        )
        md.append(
            "\nShare of the objective's variance explained by each parameter (Optuna's "
            "FanovaImportanceEvaluator, seed 0), over trials compared at one fidelity; with few "
            "trials these numbers are noisy."
        )
    else:
        md.append("Not computed (see notes).")
    if plots:
        md += ["", "## Plots", ""]
        md += [f"![{p.stem}]({p.name})" for p in plots]
    notes = [*exp.notes, *extra_notes]
    if notes:
        md += ["", "## Notes", ""]
        md += [f"- {n}" for n in notes]
    md.append("")
    return "\n".join(md)


def _percent(value: float | None, of: float | None) -> str:
    return "—" if value is None or not of else f"{100.0 * value / of:.0f}%"


def _stage_split(spec: Spec) -> str:
    if spec.variants:
        return " (fixed experiments: each variant sets its own stages)"
    pretrain = spec.pretrain_epochs
    return f" (pretrain on DeepFake {pretrain} + fine-tune on PTB-XL {spec.stages.finetune.epochs})"


def _best_per_family(t: pd.DataFrame, targets: Sequence[str]) -> str:
    rows = []
    for family, group in t.groupby("family", dropna=False, sort=True):
        full = group[group["full_fidelity"] & group["objective_last"].notna()]
        r = full.loc[full["objective_last"].idxmin()] if len(full) else best_at_highest_fidelity(group)
        if r is None:
            rows.append([cell(family), "–", "no results yet", "–", "–", *["–"] * len(targets)])
            continue
        reached = fidelity(r) + ("" if r["full_fidelity"] else " (not full: not comparable)")
        rows.append(
            [
                cell(family),
                cell(r["model"]),
                r["trial_id"],
                reached,
                cell(r["objective_last"], 3),
                *mae_cells(r, targets),
            ]
        )
    return table(["family", "model", "trial", "epochs", "objective", *target_head(targets)], rows)


def _best_per_target(t: pd.DataFrame, full: pd.DataFrame, targets: Sequence[str]) -> str:
    pool, note = full, ""
    if not len(pool):
        best = best_at_highest_fidelity(t)
        if best is None:
            return "No results yet."
        pool = t[(t["epochs"] == best["epochs"]) & t["objective_last"].notna()]
        note = f"\nNo trial has finished: compared at {best['epochs']} epochs, the most any trial reached."
    rows = []
    for x in targets:
        col = mae_column(x)
        g = pool[pool[col].notna()]
        if not len(g):
            rows.append([f"{TARGETS[x].title} ({TARGETS[x].unit})", "–", "–", "–", "–", "–"])
            continue
        r = g.loc[g[col].idxmin()]
        rows.append(
            [
                f"{TARGETS[x].title} ({TARGETS[x].unit})",
                cell(r[col]),
                r["trial_id"],
                cell(r["model"]),
                fidelity(r),
                cell(r["objective_last"], 3),
            ]
        )
    return table(["target", "MAE (last epoch)", "trial", "model", "epochs", "objective"], rows) + note


def _spread(top: pd.DataFrame, targets: Sequence[str]) -> str:
    if not len(top):
        return "No full-fidelity trials yet."
    cols = ["objective_last", *[mae_column(x) for x in targets]]
    rows = [
        [
            stat,
            *[cell(getattr(top[c].astype(float), stat)(), 3 if i == 0 else 2) for i, c in enumerate(cols)],
        ]
        for stat in ("median", "min", "max")
    ]
    return table([f"over {len(top)} trials", "objective", *target_head(targets)], rows)


def _rungs(exp: Experiment, top_k: int) -> str:
    t, h, targets = exp.trials, exp.history, exp.targets
    partial = t[(~t["full_fidelity"]) & (t["epochs"] > 0)]
    levels = sorted(set(partial["epochs"]))
    if not levels:
        return "Every trial with results trained every epoch: the full-fidelity ranking is the only one."
    out = [
        "Each table compares every trial that reached that many epochs, on its objective *at* that "
        "epoch (what ASHA compares at a rung), whatever it did later."
    ]
    info = t.set_index("trial_id")
    for e in levels:
        at = h[h[EPOCH] == e].dropna(subset=[OBJECTIVE]).sort_values(OBJECTIVE)
        ranks = at[OBJECTIVE].rank(method="min").astype(int)
        rows = []
        for i, r in at.head(top_k).iterrows():
            tr = info.loc[r["trial_id"]]
            rows.append(
                [
                    str(ranks[i]),
                    r["trial_id"],
                    tr["status"],
                    fidelity(tr),
                    *param_cells(tr, exp.sampled),
                    cell(r[OBJECTIVE], 3),
                    *[cell(r.get(MAE_KEY.format(x))) for x in targets],
                ]
            )
        head = [
            "rank",
            "trial",
            "status",
            "epochs reached",
            *exp.sampled,
            f"objective at {e}",
            *target_head(targets),
        ]
        out += [
            "",
            f"### After {e} epoch{'s' * (e != 1)} ({len(at)} trials reached it)",
            "",
            table(head, rows),
        ]
        if len(at) > top_k:
            out.append(f"\n… and {len(at) - top_k} more.")
    return "\n".join(out)


def _all_trials(exp: Experiment, limit: int = 100) -> str:
    t, targets = exp.trials, exp.targets
    ordered = t.sort_values(["epochs", "objective_last"], ascending=[False, True], na_position="last")
    head = [
        "trial",
        "status",
        "epochs",
        "rank at its epochs",
        "model",
        *exp.sampled,
        "objective last",
        "objective best (epoch)",
        *target_head(targets, " last"),
        *target_head(targets, " best"),
        "wall s",
        "host",
    ]
    rows = [
        [
            r["trial_id"],
            r["status"],
            fidelity(r),
            cell(r["rank"]),
            cell(r["model"]),
            *param_cells(r, exp.sampled),
            cell(r["objective_last"], 3),
            f"{cell(r['objective_best'], 3)} ({cell(r['best_epoch'])})",
            *mae_cells(r, targets, "last"),
            *mae_cells(r, targets, "best"),
            cell(r["wall_s"], 1),
            cell(r["hostname"]),
        ]
        for _, r in ordered.head(limit).iterrows()
    ]
    text = table(head, rows)
    if len(t) > limit:
        text += f"\n\n… and {len(t) - limit} more in trials.csv."
    return text


def _references(exp: Experiment, full: pd.DataFrame, targets: Sequence[str]) -> str:
    head = ["source", "setting", "what the number is", *target_head(targets)]
    rows = []
    for _, r in full.drop_duplicates("family").iterrows():  # full is sorted: best of each family
        rows.append(
            [
                f"ecgtune, this sweep: trial {r['trial_id']}",
                f"{cell(r['model'])}, best full-fidelity {r['family']} trial",
                f"MAE on the fine-tuning store's validation split (PTB-XL: strat_fold 9, whole "
                f"patients), last of {r['max_epochs']} epochs",
                *mae_cells(r, targets),
            ]
        )
    if exp.baseline is not None:
        rows.append(
            [
                "ecgtune, this sweep",
                "predict the training mean",
                "MAE on the same validation split",
                *[cell(exp.baseline.get(x)) for x in targets],
            ]
        )
    for ref in REFERENCES:
        rows.append(
            [
                cell(ref.source),
                ref.setting,
                ref.measures if ref.comparable else f"**not comparable**: {ref.measures}",
                *[cell(ref.mae.get(x)) for x in targets],
            ]
        )
    return table(head, rows) + (
        f"\n\n{STUDY_NOTE} Only rows that are an MAE on ECGs the model never trained on compare "
        "with ecgtune's, and even those differ in labels (MUSE vs PTB-XL+), leads and data. "
        "A dash: the source does not report that target."
    )

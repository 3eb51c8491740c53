"""Final training from a standalone config, then the one and only evaluation on the PTB-XL test fold.

    ecgtune train best.yaml -o final/     # pretrain -> fine-tune with early stopping -> test once

This is the only module that reads a test split. Each test evaluation is
recorded in a ledger beside the fine-tuning store (`test-evaluations.jsonl`);
a second evaluation of the same config on the same data is refused unless
forced, so the test fold stays a test fold.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from ecgtune import __version__
from ecgtune.backbones import BackboneStore
from ecgtune.baselines import label_noise_floor, mean_predictor
from ecgtune.data.locate import require_store
from ecgtune.data.store import ECGStore, content_key
from ecgtune.paths import MARKER_FILE, OutputPathError, check_apart_from_inputs, claim_output_dir
from ecgtune.reuse import SharedPretraining
from ecgtune.spec import Spec
from ecgtune.stages import TwoStageRun
from ecgtune.targets import MICROVOLTS_PER_MILLIVOLT, TARGETS
from ecgtune.train import errors_in_units

LEDGER_FILE = "test-evaluations.jsonl"
MODEL_WEIGHTS = "model.pt"
MODEL_META = "model.json"
BOOTSTRAP_SAMPLES = 2000


class RepeatedTestEvaluation(PermissionError):
    """The test fold of this store was already used to evaluate this config."""


class TrainingDiverged(ValueError):
    """The training loss or validation objective stopped being finite: this config's values (its
    learning rate, typically) do not train, and there is no model to test."""


@dataclass
class FinalResult:
    out_dir: Path
    test: dict[str, Any]
    best_epoch: int


def _config_key(spec: Spec) -> str:
    """What a trained model depends on besides its data: model, targets, stages, seed. The ledger's
    key of a config: names, resources, storage, search and provenance do not change the trained model,
    and the data is keyed separately by the store's own content key."""
    d = spec.model_dump(mode="json")
    return content_key({k: d[k] for k in ("model", "targets", "stages", "seed")})


def _ledger(store: ECGStore) -> Path:
    return store.path / LEDGER_FILE


def previous_evaluations(spec: Spec, store: ECGStore) -> list[dict[str, Any]]:
    ledger, key = _ledger(store), _config_key(spec)
    if not ledger.is_file():
        return []
    entries = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["config_key"] == key and e["store_key"] == store.key]


def train_final(
    spec: Spec, out_dir: str | Path, *, patience: int = 5, force: bool = False, device: str = "auto"
):
    """Train `spec` (pretraining, then fine-tuning with early stopping on validation), then test once."""
    out_dir = Path(out_dir)
    store = ECGStore(require_store(spec.data.finetune))
    claim_final_dir(out_dir, store)
    earlier = previous_evaluations(spec, store)
    if earlier and not force:
        when = ", ".join(e["time"] for e in earlier)
        raise RepeatedTestEvaluation(
            f"this config was already evaluated on the test fold of {store.path} ({when}; "
            f"see {_ledger(store)}). Every further look at the test fold biases it; "
            "pass --force to evaluate again anyway."
        )
    store.signals("test")  # a missing or broken test fold fails now, not after hours of training
    claim_output_dir(out_dir, "final", inputs=[store.path])
    run = TwoStageRun(spec, device=device)
    # A config exported from a sweep names the sweep's backbone store: the backbone its best trial
    # pretrained is there, and final training fine-tunes it instead of pretraining it again.
    backbones = spec.run.backbones if spec.run.reuse_backbones else None
    store_of_backbones = BackboneStore(backbones) if backbones else None
    provenance = {"trial": "final training", "sweep": str(out_dir)}
    shared = SharedPretraining(run, store_of_backbones, holder=f"final-{os.getpid()}", provenance=provenance)
    shared.prepare()
    if run.reused_from is not None:
        source = run.reused_from
        print(
            f"reused backbone {source['key']} from trial {source['trial']} (sweep {source['sweep']}): "
            f"{run.pretrain_epochs} pretraining epochs ({source['seconds']:.0f} s) not trained again",
            flush=True,
        )
    try:
        return _train_and_test(run, shared, spec, store, out_dir, patience)
    finally:
        shared.close()


def _train_and_test(
    run: TwoStageRun, shared: SharedPretraining, spec: Spec, store: ECGStore, out_dir: Path, patience: int
) -> FinalResult:
    history, best_objective, best_epoch, since_best = [], float("inf"), 0, 0
    best_dir = out_dir / "best"
    while not run.done:
        metrics = shared.tag(run.step())
        shared.after_step()
        history.append(metrics)
        if run.diverged:
            (out_dir / "history.json").write_text(json.dumps(history, indent=2))
            raise TrainingDiverged(
                f"training diverged at epoch {metrics['epoch']} ({metrics['stage']}): train_loss "
                f"{metrics['train_loss']}, objective {metrics['objective']}; lower the learning rate "
                f"(history in {out_dir / 'history.json'}); the test fold was not read"
            )
        print(
            f"epoch {metrics['epoch']}/{metrics['total_epochs']} {metrics['stage']:<8} "
            f"objective {metrics['objective']:.3f}  "
            + "  ".join(f"{TARGETS[t].title} {metrics[f'ptbxl_val_mae_{t}']:.1f}" for t in run.targets),
            flush=True,
        )
        if metrics["stage"] != "finetune" or run.stage != "finetune":
            continue  # early stopping watches the fine-tuning stage, the model that will be tested
        if metrics["objective"] < best_objective:
            best_objective, best_epoch, since_best = metrics["objective"], metrics["epoch"], 0
            save_model(run, best_dir)
        else:
            since_best += 1
            if since_best >= patience:
                print(f"early stop: no validation improvement for {patience} epochs", flush=True)
                break
    if best_epoch == 0:  # no fine-tuning stage (DeepFake only): test the last model
        save_model(run, best_dir)
        best_epoch = run.epochs_done
    (out_dir / "history.json").write_text(json.dumps(history, indent=2))
    test = evaluate_on_test_fold(spec, best_dir, store, out_dir, device=str(run.device))
    for name in (MODEL_WEIGHTS, MODEL_META):
        shutil.copy(best_dir / name, out_dir / name)
    return FinalResult(out_dir, test, best_epoch)


def claim_final_dir(out_dir: Path, store: ECGStore) -> None:
    """Refuse, before any work, an output directory that is not new or empty, or lies in the data.

    Final training never writes into a used directory, not even an earlier final training's:
    its model and its one test result would be lost.
    """
    check_apart_from_inputs(out_dir, [store.path])
    if out_dir.exists() and (not out_dir.is_dir() or any(p.name != MARKER_FILE for p in out_dir.iterdir())):
        what = "a file" if not out_dir.is_dir() else "a non-empty directory"
        raise OutputPathError(
            f"{out_dir}: {what}; `ecgtune train` writes a new model and test result into a new or empty "
            "directory, so nothing written before is lost — choose another -o"
        )


def save_model(run: TwoStageRun, directory: Path) -> None:
    """Weights (loaded weights-only) plus the metadata needed to rebuild and use them."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(run.model.state_dict(), directory / MODEL_WEIGHTS)
    (directory / MODEL_META).write_text(
        json.dumps({**run.metadata(), "spec": run.spec.model_dump(mode="json")})
    )


def load_model(directory: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    from ecgtune.models import build_model

    directory = Path(directory)
    meta = json.loads((directory / MODEL_META).read_text())
    model = build_model(meta["model"])
    model.load_state_dict(torch.load(directory / MODEL_WEIGHTS, map_location=device, weights_only=True))
    return model.to(device).eval(), meta


@torch.inference_mode()
def predict_signals(model: torch.nn.Module, meta: dict[str, Any], signals: np.ndarray) -> np.ndarray:
    """(n, 8, 5000) int16 µV or float mV -> (n, k) predictions in physical units (bpm, ms)."""
    scale = 1.0 / MICROVOLTS_PER_MILLIVOLT if signals.dtype == np.int16 else 1.0
    mean = torch.tensor(meta["standardizer"]["mean"])
    std = torch.tensor(meta["standardizer"]["std"])
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(signals), 256):
        x = torch.as_tensor(np.array(signals[start : start + 256]), device=device).float() * scale
        out.append(model(x).float().cpu() * std + mean)
    if not out:
        return np.zeros((0, len(meta["targets"])), dtype=np.float32)
    return torch.cat(out).numpy()


def bootstrap_ci(
    errors: np.ndarray, patients: np.ndarray, seed: int = 0
) -> dict[str, tuple[float, float]] | None:
    """95% percentile-bootstrap intervals of MAE, bias and SD of `errors` (prediction − label).

    The unit resampled is the patient (`patients`, one id per error): PTB-XL has several ECGs of
    some patients, and their errors are not independent, so resampling ECGs would make the
    intervals too narrow. None with fewer than two patients.
    """
    _, patient = np.unique(np.asarray(patients), return_inverse=True)
    if patient.max(initial=-1) < 1:
        return None
    errors = np.asarray(errors, dtype=np.float64)
    # Per patient: ECG count, sum of errors, of squared errors, of absolute errors (paired draws).
    per_patient = [np.bincount(patient, weights=w) for w in (None, errors, errors**2, np.abs(errors))]

    def statistic(n, s1, s2, sa, axis=-1):
        n, s1, s2, sa = (x.sum(axis=axis) for x in (n, s1, s2, sa))
        mean = s1 / n
        var = np.maximum(s2 - n * mean**2, 0.0) / np.maximum(n - 1, 1)
        return np.stack([sa / n, mean, np.sqrt(var)])

    res = stats.bootstrap(
        per_patient,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=BOOTSTRAP_SAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    lo, hi = res.confidence_interval
    return {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(("mae", "bias", "sd"))}


def evaluate_on_test_fold(spec: Spec, model_dir: Path, store: ECGStore, out_dir: Path, device: str = "auto"):
    model, meta = load_model(
        model_dir, device="cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    )
    targets = tuple(meta["targets"])
    test = store.split("test", targets)  # the only read of a test split in ecgtune
    truth = test.targets
    patients = store.split_labels("test")["patient_id"].to_numpy()
    pred = predict_signals(model, meta, test.signals)
    ev = errors_in_units(pred, truth, targets)
    per_target = {}
    for j, t in enumerate(targets):
        ok = ~np.isnan(truth[:, j])
        err = pred[ok, j].astype(np.float64) - truth[ok, j]
        per_target[t] = {
            "unit": TARGETS[t].unit,
            "n": int(ok.sum()),
            "mae": ev.mae[t],
            "bias": ev.bias[t],
            "sd": ev.sd[t],
            "ci95": bootstrap_ci(err, patients[ok], seed=spec.seed),
            "patients": int(len(np.unique(patients[ok]))),
            "tolerance": TARGETS[t].tolerance,
            "within_tolerance_sd": bool(ev.sd[t] <= TARGETS[t].tolerance) if ok.sum() > 1 else None,
        }
    plots = bland_altman(pred, truth, targets, out_dir)
    evaluated_before = previous_evaluations(spec, store)
    result = {
        "statement": (
            "First and only evaluation of this config on this test fold."
            if not evaluated_before
            else f"Forced re-evaluation: this config was evaluated on this test fold {len(evaluated_before)} "
            "time(s) before; these numbers are no longer an unbiased test estimate."
        ),
        "config_key": _config_key(spec),
        "store": str(store.path),
        "store_key": store.key,
        "split": "test",
        "n_ecgs": len(test),
        "objective": ev.objective,
        "targets": per_target,
        # Beside every MAE: what predicting the training mean scores, and what no model can beat.
        "mean_predictor": mean_predictor(store, "test", targets),
        "label_noise_floor": label_noise_floor(store, "test", targets),
        "plots": [p.name for p in plots],
        "ecgtune_version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out_dir / "test_result.json").write_text(json.dumps(result, indent=2))
    (out_dir / "test_report.md").write_text(format_test_report(result))
    with open(_ledger(store), "a") as f:
        f.write(
            json.dumps({k: result[k] for k in ("config_key", "store_key", "time")} | {"out": str(out_dir)})
            + "\n"
        )
    return result


def bland_altman(pred: np.ndarray, truth: np.ndarray, targets: tuple[str, ...], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for j, t in enumerate(targets):
        ok = ~np.isnan(truth[:, j])
        if ok.sum() < 2:
            continue
        mean = (pred[ok, j] + truth[ok, j]) / 2
        diff = pred[ok, j] - truth[ok, j]
        bias, sd = diff.mean(), diff.std(ddof=1)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.scatter(mean, diff, s=10, alpha=0.6)
        ax.axhline(bias, color="k", label=f"bias {bias:.1f}")
        for sign in (-1, 1):
            ax.axhline(bias + sign * 1.96 * sd, color="k", ls="--")
        ax.axhspan(-TARGETS[t].tolerance, TARGETS[t].tolerance, color="g", alpha=0.1, label="± tolerance")
        unit = TARGETS[t].unit
        ax.set(
            xlabel=f"mean of prediction and label ({unit})",
            ylabel=f"prediction − label ({unit})",
            title=f"{TARGETS[t].title}: Bland–Altman, PTB-XL test fold (n={ok.sum()})",
        )
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"bland_altman_{t}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _number(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def format_test_report(result: dict[str, Any]) -> str:
    lines = [
        "# Test-fold evaluation",
        "",
        f"**{result['statement']}**",
        "",
        f"Store `{result['store']}` (key {result['store_key']}), split `test`, {result['n_ecgs']} ECGs; "
        f"objective (mean MAE / tolerance) {result['objective']:.3f}.",
        "",
        "| target | n (patients) | MAE (95% CI) | mean predictor MAE | label-noise floor | bias (95% CI) "
        "| SD (95% CI) | tolerance (SD) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baseline = result.get("mean_predictor") or {}
    floor = result.get("label_noise_floor") or {}
    for t, r in result["targets"].items():
        ci = r["ci95"] or {"mae": (np.nan, np.nan), "bias": (np.nan, np.nan), "sd": (np.nan, np.nan)}

        def cell(name: str, r=r, ci=ci) -> str:
            return f"{r[name]:.1f} ({ci[name][0]:.1f}–{ci[name][1]:.1f})"

        lines.append(
            f"| {TARGETS[t].title} ({r['unit']}) | {r['n']} ({r.get('patients', '?')}) | {cell('mae')} "
            f"| {_number(baseline.get(t))} | {_number(floor.get(t))} | {cell('bias')} | {cell('sd')} "
            f"| {r['tolerance']:g} |"
        )
    lines += [
        "",
        "95% intervals: percentile bootstrap over patients (all ECGs of a drawn patient together). "
        "Mean predictor: every ECG predicted as the training mean. Label-noise floor: the MAE a perfect "
        "model would show, where the data's source knows its label noise (— unknown).",
        "",
        "Bland–Altman plots: " + ", ".join(result["plots"]),
    ]
    return "\n".join(lines) + "\n"

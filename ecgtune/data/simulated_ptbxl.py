"""A PTB-XL-format tree of simulated ECGs with exact labels (`ecgtune data simulate`).

`write_simulated_ptbxl(out, n, seed)` writes what the real download looks like to ecgtune:

    out/records500/<group>/<id>_hr.{hea,dat}  WFDB, 12 leads I, II, III, AVR, AVL, AVF, V1-V6, 500 Hz,
                                              10 s, format 16, 1000 adu/mV (1 uV steps)
    out/records100/<group>/<id>_lr.{hea,dat}  the same ECGs at 100 Hz (anti-aliased polyphase FIR)
    out/ptbxl_database.csv                    PTB-XL 1.0.3's columns: patients, strat_fold 1-10, scp_codes
    out/features/12sl_features.csv            PTB-XL+ 12SL global columns (HR__Global, PR_Int_Global, ...)
    out/features/exact_labels.csv             the generator's exact labels (ecg_id, hr, pr, qrs, qt)
    out/simulation.json                       generator version, seed, n, options, label-noise SDs and
                                              floor; written last: a tree without it is not finished

so `ecgtune data ptbxl out -o STORE` converts it like PTB-XL. The ECGs and label definitions are
`ecgtune.data.simulate`'s. With `label_noise`, 12sl_features.csv holds labels with the disagreement
real measurement programs have, exact_labels.csv the noise-free ones, and simulation.json the MAE a
perfect model would show against the written labels (`ecgtune.data.simulation_file.label_noise_floor`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from ecgtune.data.ptbxl import N_FOLDS, split_for_fold
from ecgtune.data.ptbxl_format import PTBXL_LEADS, record_name, write_database, write_features, write_wfdb16
from ecgtune.data.simulate import (
    FRAMINGHAM_SLOPE,
    GENERATOR_VERSION,
    Params,
    draw_parameters,
    render,
    twelve_leads,
)
from ecgtune.data.simulate_noise import NoiseLevel, add_noise, noise_level
from ecgtune.data.simulation_file import SIMULATION_FILE
from ecgtune.paths import MARKER_FILE, OutputPathError, claim_output_dir, marker_kind, write_marker
from ecgtune.progress import Progress
from ecgtune.targets import MICROVOLTS_PER_MILLIVOLT, SAMPLING_RATE_HZ, TARGET_NAMES

FEATURES_FILE = "features/12sl_features.csv"
EXACT_LABELS_FILE = "features/exact_labels.csv"
# What the simulator writes at the top of a tree: --rebuild replaces a tree holding nothing else.
KIND = "simulated-ptbxl"  # its `ecgtune.paths` output kind
TREE_ENTRIES = frozenset(
    {"records500", "records100", "ptbxl_database.csv", "features", SIMULATION_FILE, MARKER_FILE}
)
LOW_RATE_HZ = 100
CHUNK_SIZE = 256  # ECGs rendered (and seeded) together; part of what a seed means, like the version
# PTB-XL: 21,799 ECGs of 18,869 patients (Wagner et al., Sci Data 7:154, 2020), 1.155 per patient:
# ECGs per patient ~ 1 + geometric, P(k) = (1 - q) q^(k - 1) with mean 1 / (1 - q) = 1.155.
ECGS_PER_PATIENT = 21799 / 18869
# Label noise: how far commercial programs disagree. Issue 14 gives the 75th percentiles of the
# absolute differences between programs as PR 4-6, QRS 4-8, QT 6-10 ms (its figures; the CSE-style
# comparisons of e.g. Kligfield et al., Am Heart J 2014;167:150-9 report spreads of this size, not
# re-checked here). For normal noise the 75th percentile of |e| is 1.15 SD: midpoints 5, 6, 8 ms give
# SDs 4.3, 5.2, 7.0 ms; HR ~1 bpm (rate is measured the same way by every program).
LABEL_NOISE_SD: dict[str, float] = {"hr": 1.0, "pr": 4.3, "qrs": 5.2, "qt": 7.0}
if PTBXL_LEADS[:6] != ("I", "II", "III", "AVR", "AVL", "AVF"):
    raise ImportError(f"twelve_leads() and quantise_12() assume PTB-XL's limb-lead order, not {PTBXL_LEADS}")
# Long QTc (Framingham-corrected) above 450 ms in men, 460 ms in women (approx., common cut-offs).
LONG_QTC_MS = (450.0, 460.0)


# ------------------------------------------------------------------------------- patients and folds


def assign_patients(n: int, rng: np.random.Generator) -> np.ndarray:
    """Patient index (n,) ints 0..P-1: ~1.155 ECGs per patient as in PTB-XL, in random ECG order."""
    q = 1 - 1 / ECGS_PER_PATIENT
    counts = rng.geometric(1 - q, size=n)  # more patients than needed; the tail is cut off
    patient = np.repeat(np.arange(n), counts)[:n]
    patient = patient[rng.permutation(n)]
    return np.unique(patient, return_inverse=True)[1].astype(np.int64)  # renumber 0..P-1


def assign_folds(patient: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """strat_fold (n,) 1-10 by patient: all ECGs of a patient in one fold, folds of equal ECG count.

    Patients in random order fill fold 1, then 2, ... by cumulative ECG count (PTB-XL also assigns
    whole patients; it stratifies by diagnosis too, which a simulation need not).
    """
    n_pat = int(patient.max()) + 1 if len(patient) else 0
    counts = np.bincount(patient, minlength=n_pat)
    order = rng.permutation(n_pat)
    before = np.cumsum(counts[order]) - counts[order]  # ECGs placed before each patient
    fold_of = np.empty(n_pat, np.int64)
    fold_of[order] = before * N_FOLDS // max(len(patient), 1) + 1
    return fold_of[patient]


def scp_codes(labels: pd.DataFrame) -> list[dict[str, float]]:
    """PTB-XL-style SCP statements (decorative, but consistent with the drawn labels).

    Rhythm (likelihood 0.0, as PTB-XL writes rhythm statements): SBRAD < 60 bpm, STACH > 100, else
    SR. 1AVB: PR > 200 ms. CLBBB/CRBBB: QRS >= 120 ms with that conduction, ILBBB/IRBBB 110-119 ms,
    IVCD: other QRS >= 110 ms (Surawicz et al., Circulation 2009). LNGQT: Framingham QTc above
    `LONG_QTC_MS` (men, women). NORM (100) when no statement but rhythm applies.
    """
    hr, pr, qrs = (labels[c].to_numpy() for c in ("hr", "pr", "qrs"))
    qtc = labels["qt"].to_numpy() + 1000.0 * FRAMINGHAM_SLOPE * (1.0 - labels["rr_ms"].to_numpy() / 1000.0)
    long_qt = qtc > np.where(labels["sex"].to_numpy() == 1, LONG_QTC_MS[1], LONG_QTC_MS[0])
    conduction = labels["conduction"].to_numpy()
    out = []
    for i in range(len(labels)):
        codes: dict[str, float] = {}
        if pr[i] > 200:
            codes["1AVB"] = 100.0
        bbb = {"lbbb": "LBBB", "rbbb": "RBBB"}.get(conduction[i])
        if bbb and qrs[i] >= 120:
            codes["C" + bbb] = 100.0
        elif bbb and qrs[i] >= 110:
            codes["I" + bbb] = 100.0
        elif qrs[i] >= 110:
            codes["IVCD"] = 100.0
        if long_qt[i]:
            codes["LNGQT"] = 100.0
        if not codes:
            codes["NORM"] = 100.0
        codes["SBRAD" if hr[i] < 60 else "STACH" if hr[i] > 100 else "SR"] = 0.0
        out.append(codes)
    return out


# ----------------------------------------------------------------------------------- label noise


def draw_label_noise(exact: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Labels as a measurement program would report them: exact + N(0, `LABEL_NOISE_SD`), PR/QRS/QT
    rounded to whole ms as 12SL reports them. `exact` has hr, pr, qrs, qt; returns those columns."""
    noisy = exact[list(TARGET_NAMES)].astype(float).copy()
    for t in TARGET_NAMES:
        noisy[t] = exact[t].to_numpy(float) + rng.normal(0.0, LABEL_NOISE_SD[t], len(exact))
        if t != "hr":
            noisy[t] = noisy[t].round()
    return noisy


def _floor(written: pd.DataFrame, exact: pd.DataFrame) -> dict[str, float | None]:
    """Mean |written - exact| per target; None for no ECGs (a tiny tree may have no val/test fold)."""
    if not len(exact):
        return dict.fromkeys(TARGET_NAMES)
    return {
        t: float(np.mean(np.abs(written[t].to_numpy(float) - exact[t].to_numpy(float)))) for t in TARGET_NAMES
    }


# ----------------------------------------------------------------------------------- WFDB records


def quantise_12(x12_mv: np.ndarray) -> np.ndarray:
    """(…, 12, T) float mV in `PTBXL_LEADS` order -> int16 µV, with III = II - I exactly.

    I, II and V1-V6 are rounded to 1 µV; III, aVR, aVL, aVF are derived from the rounded I and II
    (rounding each lead on its own would break III = II - I by up to 1 µV).
    """
    uv = np.rint(np.asarray(x12_mv, np.float64) * MICROVOLTS_PER_MILLIVOLT)
    i, ii = uv[..., 0, :], uv[..., 1, :]
    uv[..., 2, :], uv[..., 3, :] = ii - i, np.rint(-(i + ii) / 2)
    uv[..., 4, :], uv[..., 5, :] = np.rint(i - ii / 2), np.rint(ii - i / 2)
    if np.abs(uv).max(initial=0) > 32767:
        raise ValueError("a simulated ECG exceeds ±32.767 mV, which format 16 at 1000/mV cannot hold")
    return uv.astype(np.int16)


def _write_chunk(
    root: str, ecg_ids: np.ndarray, params: Params, noise: NoiseLevel, seed: np.random.SeedSequence
) -> int:
    """Render, add noise to, and write one chunk of records (500 Hz and 100 Hz); return the count."""
    x8 = add_noise(render(params), noise, np.random.default_rng(seed))  # (m, 8, 5000) mV
    # 500 -> 100 Hz: polyphase FIR (Kaiser), linear edge padding; then derive the 12 leads.
    low = resample_poly(x8.astype(np.float64), 1, SAMPLING_RATE_HZ // LOW_RATE_HZ, axis=-1, padtype="line")
    high_uv, low_uv = quantise_12(twelve_leads(x8)), quantise_12(twelve_leads(low))  # (m, 12, T)
    for folder in {
        (Path(root) / record_name(i, low_rate=lr)).parent for i in ecg_ids for lr in (False, True)
    }:
        folder.mkdir(parents=True, exist_ok=True)
    for k, ecg_id in enumerate(ecg_ids):
        write_wfdb16(Path(root) / record_name(ecg_id), high_uv[k], SAMPLING_RATE_HZ)
        write_wfdb16(Path(root) / record_name(ecg_id, low_rate=True), low_uv[k], LOW_RATE_HZ)
    return len(ecg_ids)


# ------------------------------------------------------------------------------------------ the tree


def _check_output(out: Path, rebuild: bool) -> None:
    """The output rule (`ecgtune.paths`): never delete or overwrite what a user owns. Only a tree this
    module wrote (its `.ecgtune` marker) may be replaced, with `rebuild`, and only if nothing was added."""
    claim_output_dir(out, KIND, create=False)  # refuses a file, a foreign or another kind's directory
    if marker_kind(out) != KIND:
        return  # absent or empty
    if not rebuild:
        raise OutputPathError(f"{out} already holds a simulated tree; pass --rebuild to replace it")
    foreign = sorted({p.name for p in out.iterdir()} - TREE_ENTRIES)
    if foreign:
        raise OutputPathError(
            f"{out} holds files the simulator did not write ({foreign[:5]}); not replacing it"
        )


def write_simulated_ptbxl(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    *,
    noise: str | NoiseLevel = "realistic",
    label_noise: bool = False,
    rebuild: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Write a PTB-XL-format tree of `n` simulated ECGs to `out` (see the module docstring); return it.

    `noise`: `ecgtune.data.simulate_noise.NOISE_LEVELS` name or a NoiseLevel. `label_noise`: write
    12SL labels with program-to-program disagreement (`LABEL_NOISE_SD`). The same (n, seed, noise,
    label_noise) give the same tree whatever `workers` (processes writing records; default all cores).

    `out` must not exist, or be empty, or (with `rebuild`) hold a tree this function wrote and
    nothing else; anything else raises ValueError naming it. The tree is written into a temporary
    sibling directory and renamed into place at the end: a crash leaves nothing at `out`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of ECGs, got {n!r}")
    out = Path(out)
    level = noise_level(noise)
    _check_output(out, rebuild)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    write_marker(tmp, KIND)
    try:
        _write_tree(tmp, int(n), int(seed), level, label_noise, workers or os.cpu_count() or 1, progress, t0)
        _check_output(out, rebuild)  # again: another process may have written there meanwhile
        if out.exists() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / "tree")
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            if out.exists():
                out.rmdir()
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_tree(root: Path, n: int, seed: int, level: NoiseLevel, label_noise: bool, workers: int,
                progress: bool, t0: float) -> None:  # fmt: skip
    # Independent streams: population and labels, label noise, file shuffling, then one per chunk.
    # spawn() children depend only on their index, so chunk k's noise is the same for any n >= its end.
    streams = np.random.SeedSequence(seed).spawn(3 + -(-n // CHUNK_SIZE))
    rng = np.random.default_rng(streams[0])
    patient = assign_patients(n, rng)
    fold = assign_folds(patient, rng)
    params = draw_parameters(n, rng, patient)
    exact = params.labels
    ecg_ids = np.arange(1, n + 1)
    chunks = [slice(i, min(i + CHUNK_SIZE, n)) for i in range(0, n, CHUNK_SIZE)]
    jobs = [(str(root), ecg_ids[c], params.take(c), level, streams[3 + k]) for k, c in enumerate(chunks)]
    bar = _progress(n, progress)
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            bar.update(_write_chunk(*job))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            for done in pool.map(_write_chunk, *zip(*jobs, strict=True)):
                bar.update(done)
    bar.close()

    patient_ids = np.random.default_rng(streams[2]).permutation(int(patient.max()) + 1) + 1
    codes = scp_codes(exact)
    write_database(
        root,
        pd.DataFrame(
            {
                "ecg_id": ecg_ids, "patient_id": patient_ids[patient], "age": exact["age"].to_numpy(float),
                "sex": exact["sex"].to_numpy(), "scp_codes": codes, "strat_fold": fold,
                "report": ["simulated ecg: " + ", ".join(c) for c in codes],
            }
        ),
    )  # fmt: skip
    written = (
        draw_label_noise(exact, np.random.default_rng(streams[1]))
        if label_noise
        else exact[list(TARGET_NAMES)]
    )
    write_features(root / FEATURES_FILE, pd.concat([pd.Series(ecg_ids, name="ecg_id"), written], axis=1),
                   source="12sl", seed=seed)  # fmt: skip
    exact_out = exact.drop(columns=["patient"]).assign(ecg_id=ecg_ids, strat_fold=fold)
    exact_out[["ecg_id", *[c for c in exact_out.columns if c != "ecg_id"]]].to_csv(
        root / EXACT_LABELS_FILE, index=False
    )

    split = np.array([split_for_fold(int(f)) for f in range(1, N_FOLDS + 1)])[fold - 1]
    info: dict[str, Any] = {
        "generator": "ecgtune.data.simulate",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n": n,
        "n_patients": int(patient.max()) + 1,
        "chunk_size": CHUNK_SIZE,
        "options": {"noise": level.describe(), "label_noise": label_noise, "low_rate_hz": LOW_RATE_HZ},
        "label_noise": {
            "sd": {t: (LABEL_NOISE_SD[t] if label_noise else 0.0) for t in TARGET_NAMES},
            "floor_mae": _floor(written, exact),
            "floor_mae_by_split": {
                s: _floor(written[split == s], exact[split == s]) for s in ("train", "val", "test")
            },
            "note": "floor = mean |12sl_features.csv label - exact label| (bpm, ms): a perfect model's MAE",
        },
        "ecgs_per_fold": {str(f): int((fold == f).sum()) for f in range(1, N_FOLDS + 1)},
        "files": {
            "features": FEATURES_FILE,
            "exact_labels": EXACT_LABELS_FILE,
            "database": "ptbxl_database.csv",
        },
        "elapsed_s": round(time.time() - t0, 1),
    }
    (root / SIMULATION_FILE).write_text(json.dumps(info, indent=2) + "\n")  # last: marks the tree complete


def _progress(total: int, enabled: bool) -> Progress:
    return Progress(total, "simulating", enabled=enabled)

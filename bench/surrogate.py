"""A surrogate of the curve table: the whole learning curve of any configuration of the table's space, as
syne-tune's BlackboxSurrogate does it (a regressor fitted on recorded curves, queried anywhere).

Two regressors, so that trials sharing a backbone share its pretraining:
- the pretraining epochs' metrics (zero-shot read-outs, per target) from the backbone's coordinates only
  (its model.* and pretrain.* keys), fitted on one curve per backbone;
- the fine-tuning epochs' metrics from all coordinates.
Each predicts every epoch's objective and four MAEs at once (multi-output), so a predicted curve has the
shape of recorded ones. The objective is modelled in logs (it is a positive ratio). Configurations are
read in the unit cube (bench/unit_cube.py), the coordinates the table was sampled in.

    python -m bench.surrogate validate           # held-out backbones: Spearman of final objectives
    python -m bench.surrogate fit --model gp     # -> bench/data/surrogate.json (recipe + fingerprint)
    python -m bench.surrogate split              # one fold's held-out rows and the rest, as two tables
    python -m bench.replay run --blackbox tabular --table runs/surrogate-split/heldout-predicted.json.gz \
        --tag heldout-predicted --budget-fte 24 --seeds 30 --strategies random random_asha tpe_asha ...
    python -m bench.replay run --blackbox tabular --table runs/surrogate-split/heldout.json.gz \
        --tag heldout-recorded --budget-fte 24 --seeds 30 --strategies (the same)
    python -m bench.surrogate rankings           # the two rankings, tau, pairs (bench/heldout_rankings.py)

The committed surrogate is its recipe (regressor, settings, seed) and a fingerprint of its predictions:
`load_surrogate` refits it on the committed table in seconds and refuses a refit whose predictions differ
from the fingerprint (another scikit-learn, another table).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.curve_table import TABLE_FILE, CurveTable, backbone_keys, finetune_keys, load_space_spec
from bench.unit_cube import cube_keys, encode

SURROGATE_FILE = Path(__file__).resolve().parent / "data" / "surrogate.json"
# Refitted surrogates, by fingerprint and table checksum (not committed: rebuilt in seconds).
CACHE_DIR = Path(os.environ.get("ECGTUNE_BENCH_CACHE", Path.home() / ".cache" / "ecgtune-bench"))
METRICS = ("objective", "ptbxl_val_mae_hr", "ptbxl_val_mae_pr", "ptbxl_val_mae_qrs", "ptbxl_val_mae_qt")
RECIPES: dict[str, dict[str, Any]] = {
    "extra_trees": {"n_estimators": 400, "min_samples_leaf": 2, "max_features": 0.7},
    "random_forest": {"n_estimators": 400, "min_samples_leaf": 2, "max_features": 0.7},
    "knn": {"n_neighbors": 5, "weights": "distance"},
    "gp": {},
}


def _regressor(name: str, seed: int):
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
    from sklearn.neighbors import KNeighborsRegressor

    settings = RECIPES[name]
    if name == "extra_trees":
        return ExtraTreesRegressor(random_state=seed, n_jobs=1, **settings)
    if name == "random_forest":
        return RandomForestRegressor(random_state=seed, n_jobs=1, **settings)
    if name == "knn":
        return KNeighborsRegressor(**settings)
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = ConstantKernel() * Matern(length_scale=np.full(10, 0.5), nu=2.5) + WhiteKernel(1e-2)
    return _PerOutputGP(kernel, seed)


class _PerOutputGP:
    """A GP on the first principal components of the (standardised) curves: one GP per component."""

    def __init__(self, kernel, seed: int, components: int = 4):
        self.kernel, self.seed, self.components = kernel, seed, components

    def fit(self, x: np.ndarray, y: np.ndarray):
        from sklearn.gaussian_process import GaussianProcessRegressor

        self.mean, self.sd = y.mean(0), y.std(0) + 1e-9
        z = (y - self.mean) / self.sd
        u, s, vt = np.linalg.svd(z, full_matrices=False)
        k = min(self.components, len(s))
        self.basis = vt[:k]
        scores = z @ self.basis.T
        self.gps = []
        for j in range(k):
            kernel = self.kernel.clone_with_theta(self.kernel.theta)
            if x.shape[1] != 10:
                from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

                kernel = ConstantKernel() * Matern(
                    length_scale=np.full(x.shape[1], 0.5), nu=2.5
                ) + WhiteKernel(1e-2)
            gp = GaussianProcessRegressor(
                kernel, normalize_y=True, random_state=self.seed, n_restarts_optimizer=2
            )
            self.gps.append(gp.fit(x, scores[:, j]))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        scores = np.column_stack([gp.predict(x) for gp in self.gps])
        return (scores @ self.basis) * self.sd + self.mean


def _targets(rows: list[dict[str, Any]], stage: str) -> np.ndarray:
    """Per row, the stage's epochs x METRICS, flattened; the objective in logs. Diverged: not here."""
    out = []
    for r in rows:
        values = []
        for e in (e for e in r["epochs"] if e["stage"] == stage):
            for m in METRICS:
                v = e[m]
                values.append(math.log(v) if m == "objective" else v)
        out.append(values)
    return np.array(out, dtype=float)


def usable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every metric of every epoch finite (a diverged row has nulls)."""
    return [
        r for r in rows if all(e[m] is not None and math.isfinite(e[m]) for e in r["epochs"] for m in METRICS)
    ]


class Surrogate:
    """Fitted curves: `curve(config)` -> the epochs a trial of `config` reports (both stages)."""

    def __init__(self, rows: list[dict[str, Any]], model: str = "extra_trees", seed: int = 0):
        spec = load_space_spec()
        self.space = spec.search.space
        self.keys = cube_keys(self.space)
        self.b_keys, self.f_keys = backbone_keys(self.space), finetune_keys(self.space)
        self.model, self.seed = model, seed
        rows = usable(rows)
        self.pretrain_epochs = sum(e["stage"] == "pretrain" for e in rows[0]["epochs"])
        self.finetune_epochs = sum(e["stage"] == "finetune" for e in rows[0]["epochs"])
        by_backbone: dict[str, list[dict]] = {}
        for r in rows:
            by_backbone.setdefault(
                json.dumps({k: r["config"][k] for k in self.b_keys}, sort_keys=True), []
            ).append(r)
        backbones = [group[0] for group in by_backbone.values()]  # pretraining is the same for each
        self.pretrain_model = _regressor(model, seed).fit(
            self.encode(backbones, self.b_keys), _targets(backbones, "pretrain")
        )
        self.finetune_model = _regressor(model, seed).fit(
            self.encode(rows, self.keys), _targets(rows, "finetune")
        )
        self.rows = rows

    def encode(self, rows_or_configs: list[Mapping[str, Any]], keys: list[str]) -> np.ndarray:
        configs = [r["config"] if "config" in r else r for r in rows_or_configs]
        return np.array([encode(self.space, keys, c) for c in configs])

    def predict(self, configs: list[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(pretraining, fine-tuning) arrays of shape (n, epochs, len(METRICS)), objective not in logs."""
        pre = self.pretrain_model.predict(self.encode(configs, self.b_keys))
        ft = self.finetune_model.predict(self.encode(configs, self.keys))
        pre = pre.reshape(len(configs), self.pretrain_epochs, len(METRICS))
        ft = ft.reshape(len(configs), self.finetune_epochs, len(METRICS))
        for a in (pre, ft):
            a[..., 0] = np.exp(a[..., 0])
        return pre, ft

    def final_objective(self, configs: list[Mapping[str, Any]]) -> np.ndarray:
        return self.predict(configs)[1][:, -1, 0]

    def curve(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every epoch a trial of `config` reports, with the keys ecgtune's trials report."""
        pre, ft = self.predict([config])
        epochs, total = [], self.pretrain_epochs + self.finetune_epochs
        for stage, values in (("pretrain", pre[0]), ("finetune", ft[0])):
            for i, row in enumerate(values):
                e = {
                    "stage": stage,
                    "stage_epoch": i + 1,
                    "finetune_epoch": i + 1 if stage == "finetune" else 0,
                }
                e.update({m: float(v) for m, v in zip(METRICS, row, strict=True)})
                e.update({"epoch": len(epochs) + 1, "total_epochs": total, "diverged": False})
                epochs.append(e)
        return epochs

    def fingerprint(self) -> str:
        """A hash of the predicted curves of every recorded configuration (rounded to 1e-9)."""
        pre, ft = self.predict([r["config"] for r in self.rows])
        blob = np.round(np.concatenate([pre.ravel(), ft.ravel()]), 9).tobytes()
        return hashlib.sha256(blob).hexdigest()[:16]


# ------------------------------------------------------------------------------------- validation


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def held_out(table: CurveTable, model: str, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Fit on the backbones of 4 folds, predict the 5th (all its fine-tuning settings): a configuration
    is held out together with every configuration that shares its pretraining."""
    rows = usable(table.main_rows())
    backbones = sorted({r["backbone"] for r in rows})
    order = np.random.default_rng(seed).permutation(backbones)
    fold_of = {b: i % folds for i, b in enumerate(order)}
    predicted, recorded, which = [], [], []
    for k in range(folds):
        train = [r for r in rows if fold_of[r["backbone"]] != k]
        test = [r for r in rows if fold_of[r["backbone"]] == k]
        s = Surrogate(train, model, seed)
        predicted += list(s.final_objective([r["config"] for r in test]))
        recorded += [r["epochs"][-1]["objective"] for r in test]
        which += [r["id"] for r in test]
    p, r = np.array(predicted), np.array(recorded)
    return {
        "model": model,
        "folds": folds,
        "configurations": len(rows),
        "spearman_final": spearman(p, r),
        "mae_final": float(np.mean(np.abs(p - r))),
        "predicted": dict(zip(which, p.tolist(), strict=True)),
    }


def load_surrogate(path: Path = SURROGATE_FILE, table_file: Path = TABLE_FILE) -> Surrogate:
    """The committed surrogate, refitted on the committed table (seconds for the GP), or read from a local
    cache of an earlier refit; either way its predictions must match the committed fingerprint."""
    recipe = json.loads(path.read_text())
    s = fit_on(table_file, recipe["model"], recipe["seed"])
    if s.fingerprint() != recipe["fingerprint"]:  # perhaps a cache written by another scikit-learn
        s = fit_on(table_file, recipe["model"], recipe["seed"], refresh=True)
    if s.fingerprint() != recipe["fingerprint"]:
        raise ValueError(
            f"{path}: refitted on {table_file}, the surrogate predicts other curves than the committed one "
            f"(fingerprint {s.fingerprint()}, expected {recipe['fingerprint']}): another table or sklearn"
        )
    return s


def fit_on(table_file: Path, model: str, seed: int, refresh: bool = False) -> Surrogate:
    """A surrogate fitted on a table, once per machine: every Ray worker of a replay loads one, so the fit
    is cached (`CACHE_DIR`, by regressor, seed and the table's checksum); `refresh` refits regardless."""
    import pickle

    table_sum = hashlib.sha256(Path(table_file).read_bytes()).hexdigest()[:12]
    cache = CACHE_DIR / f"fit-{model}-{seed}-{table_sum}.pkl"
    if cache.is_file() and not refresh:
        try:
            return pickle.loads(cache.read_bytes())
        except Exception:  # a cache from another scikit-learn: refit
            pass
    s = Surrogate(CurveTable(table_file).main_rows(), model, seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(s))
    tmp.replace(cache)
    return s


def split(
    table: CurveTable, out_dir: Path, folds: int = 5, fold: int = 0, seed: int = 0
) -> tuple[Path, Path, Path]:
    """Three packed tables: the rows of fold `fold`'s backbones (held out), the rest (the same folds as
    `held_out`), and the held-out rows again with the curves a surrogate fitted on the rest predicts for
    them. Strategies replayed on the last two search the same configurations (65 for one fold of five),
    once with recorded and once with predicted curves: if the surrogate is faithful they rank the same."""
    import gzip

    if folds < 2:  # one fold holds out every backbone and leaves the surrogate nothing to fit on
        raise ValueError(f"--folds {folds}: expected 2 or more (1 would hold out every backbone)")
    if not 0 <= fold < folds:
        raise ValueError(f"--fold {fold}: expected 0 to {folds - 1} (--folds {folds})")
    rows = table.main_rows()
    backbones = sorted({r["backbone"] for r in rows})
    order = np.random.default_rng(seed).permutation(backbones)
    held = {b for i, b in enumerate(order) if i % folds == fold}
    _claim_split_dir(out_dir, {"folds": folds, "fold": fold, "seed": seed,
                               "table_packed": table.provenance.get("packed")})  # fmt: skip
    paths = []
    for name, keep in (
        ("train", lambda r: r["backbone"] not in held),
        ("heldout", lambda r: r["backbone"] in held),
    ):
        data = {
            "format": 2,
            "planned_rows": 0,
            "provenance": table.provenance,
            "rows": [r for r in rows if keep(r)],
        }
        path = out_dir / f"{name}.json.gz"
        with gzip.open(path, "wt") as f:
            json.dump(data, f)
        paths.append(path)
    recipe = json.loads(SURROGATE_FILE.read_text())
    fitted = fit_on(paths[0], recipe["model"], recipe["seed"])  # as `--blackbox surrogate-fit` fits it
    held_rows = usable([r for r in rows if r["backbone"] in held])
    data = {"format": 2, "planned_rows": 0, "provenance": table.provenance,
            "rows": [{**r, "epochs": fitted.curve(r["config"])} for r in held_rows]}  # fmt: skip
    path = out_dir / "heldout-predicted.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(data, f)
    final = np.array([[r["epochs"][-1]["objective"], p["epochs"][-1]["objective"]]
                      for r, p in zip(held_rows, data["rows"], strict=True)])  # fmt: skip
    print(f"held-out fold: {len(held_rows)} configurations; predicted final objectives rank the recorded "
          f"ones with Spearman {spearman(final[:, 0], final[:, 1]):.2f}")  # fmt: skip
    return paths[0], paths[1], path


def _claim_split_dir(out_dir: Path, which: dict[str, Any]) -> None:
    """A folder holds one split: writing the same split again (deterministic) is allowed, another split
    would silently change the tables earlier replays of that folder were run on, so it is refused."""
    manifest = out_dir / "split.json"
    if manifest.is_file():
        if json.loads(manifest.read_text()) != which:
            raise ValueError(f"{out_dir}: holds another split ({manifest.read_text().strip()}); "
                             f"expected {json.dumps(which)}: pass another --out")  # fmt: skip
        return
    taken = [p.name for p in out_dir.glob("*.json.gz")] if out_dir.is_dir() else []
    if taken:
        raise ValueError(f"{out_dir}: holds {', '.join(sorted(taken))} but no split.json; expected an "
                         f"empty or new folder: pass another --out")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(which))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.surrogate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="held-out backbones, every regressor")
    v.add_argument("--table", type=Path, default=TABLE_FILE)
    v.add_argument("--models", nargs="*", default=list(RECIPES))
    sp = sub.add_parser("split", help="held-out and training tables of one fold, for `rankings`")
    sp.add_argument("--table", type=Path, default=TABLE_FILE)
    sp.add_argument("--out", type=Path, default=Path("runs/surrogate-split"))
    sp.add_argument("--folds", type=int, default=5, help="folds of backbones (2: hold out half)")
    sp.add_argument("--fold", type=int, default=0, help="which fold is held out")
    rk = sub.add_parser("rankings", help="held-out rows against a surrogate not fitted to them")
    rk.add_argument("--budget-fte", type=float, default=24)
    rk.add_argument(
        "--tags",
        nargs=2,
        default=["heldout-predicted", "heldout-recorded"],
        help="two replay tags (heldout-surrogate: the surrogate over the whole space; "
        "a+b pools two tags' runs)",
    )
    rk.add_argument(
        "--margin",
        type=float,
        default=None,
        help="equivalence margin (default: the table's training noise, median SD over seeds)",
    )
    f = sub.add_parser("fit", help="fit the chosen regressor and write its recipe")
    f.add_argument("--table", type=Path, default=TABLE_FILE)
    f.add_argument("--model", default="extra_trees", choices=list(RECIPES))
    f.add_argument("--out", type=Path, default=SURROGATE_FILE)
    args = p.parse_args()
    if args.command == "rankings":
        from bench.heldout_rankings import rankings

        result = rankings(tuple(args.tags), budget_fte=args.budget_fte, margin=args.margin)
        name = "heldout_rankings" + ("" if args.tags[0] == "heldout-predicted" else f"-{args.tags[0]}")
        out = SURROGATE_FILE.parent / "replay" / f"{name}@{args.budget_fte:g}fte.json"
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
        return
    table = CurveTable(args.table)
    if args.command == "split":
        try:
            paths = split(table, args.out, folds=args.folds, fold=args.fold)
        except ValueError as e:
            raise SystemExit(f"python -m bench.surrogate split: {e}") from None
        for path in paths:
            print(f"wrote {path}")
        return
    if args.command == "validate":
        for m in args.models:
            r = held_out(table, m)
            print(f"{m:<14} Spearman {r['spearman_final']:.3f}, MAE {r['mae_final']:.4f} "
                  f"({r['configurations']} configurations, {r['folds']} folds by backbone)")  # fmt: skip
        return
    s = Surrogate(table.main_rows(), args.model)
    validation = held_out(table, args.model)
    recipe = {
        "model": args.model,
        "settings": RECIPES[args.model],
        "seed": 0,
        "fingerprint": s.fingerprint(),
        "table": {
            "path": str(args.table.name),
            "rows": len(table),
            "provenance_packed": table.provenance["packed"],
        },
        "validation": {k: v for k, v in validation.items() if k != "predicted"},
        "feature_keys": s.keys,
    }
    args.out.write_text(json.dumps(recipe, indent=1))
    print(f"wrote {args.out}: {args.model}, held-out Spearman {validation['spearman_final']:.3f}")


if __name__ == "__main__":
    main()

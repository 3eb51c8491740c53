"""`ecgtune` command line: each verb parses, calls one function a user could import, and prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Each verb imports what it needs when it runs: `ecgtune --help`, and `ecgtune validate` of a broken
# file, must not wait seconds for torch, Ray or pandas (tests/test_imports.py).


def _data_demo(args: argparse.Namespace) -> None:
    from ecgtune.data.demo import build_demo
    from ecgtune.data.locate import demo_root

    for store, reused in build_demo(Path(args.root) if args.root else demo_root(), rebuild=args.rebuild):
        print(("reused " if reused else "built ") + store.summary())


def _data_deepfake(args: argparse.Namespace) -> None:
    from ecgtune.data.deepfake import convert_deepfake

    store, reused = convert_deepfake(args.root, args.out, limit=args.limit, rebuild=args.rebuild)
    print(("reused " if reused else "wrote ") + store.summary())


def _data_ptbxl(args: argparse.Namespace) -> None:
    from ecgtune.data.ptbxl import convert_ptbxl

    store, reused = convert_ptbxl(
        args.root,
        args.out,
        features=args.features,
        label_source=args.label_source,
        normal_only=args.normal_only,
        limit=args.limit,
        rebuild=args.rebuild,
    )
    print(("reused " if reused else "wrote ") + store.summary())


def _data_generate(args: argparse.Namespace) -> None:
    from ecgtune.data.generate import build_generated_store

    store, reused = build_generated_store(
        args.out,
        n=args.n,
        seed=args.seed,
        labeller=args.labeller,
        workers=args.workers,
        batch_size=args.batch_size,
        device=args.device,
        rebuild=args.rebuild,
    )
    print(("reused " if reused else "wrote ") + store.summary())


def _data_simulate(args: argparse.Namespace) -> None:
    from ecgtune.data.simulated_ptbxl import write_simulated_ptbxl
    from ecgtune.data.simulation_file import label_noise_floor

    out = write_simulated_ptbxl(
        args.out,
        args.n,
        args.seed,
        noise=args.noise_level,
        label_noise=args.label_noise,
        rebuild=args.rebuild,
        workers=args.workers,
        progress=True,
    )
    print(f"wrote {args.n} simulated ECGs (PTB-XL format, seed {args.seed}) to {out}")
    if args.label_noise:
        floor = ", ".join(f"{t} {v:.2f}" for t, v in label_noise_floor(out).items())
        print(f"label-noise floor (MAE of a perfect model against 12sl_features.csv): {floor}")
    print(f"convert it with: ecgtune data ptbxl {out} -o STORE")


def _data_info(args: argparse.Namespace) -> None:
    from ecgtune.data.store import ECGStore

    print(ECGStore(args.store).summary())


def _validate(args: argparse.Namespace) -> None:
    from ecgtune.shipped import sweep_spec_path
    from ecgtune.spec import load_spec

    for name in args.specs:
        path = sweep_spec_path(name)
        spec = load_spec(path, args.overrides)
        kind = "sweep spec" if spec.search or spec.variants else "training config"
        print(f"{path}: valid {kind} '{spec.name}'")


def _sweep(args: argparse.Namespace) -> None:
    from ecgtune.data.demo import ensure_demo_data
    from ecgtune.search import run_sweep
    from ecgtune.shipped import sweep_spec_path
    from ecgtune.spec import load_spec
    from ecgtune.sweep_results import format_summary

    path = sweep_spec_path(args.spec)
    spec = load_spec(path, args.overrides)  # a bad file or override fails here, before any data or Ray
    ensure_demo_data([spec.data.pretrain, spec.data.finetune])  # visibly, before the sweep resolves them
    result = run_sweep(
        path,
        overrides=args.overrides,
        resume=args.resume,
        storage_path=args.storage_path,
        address=args.address,
        warm_start=args.warm_start,
    )
    print(format_summary(result.summary))
    print(f"results: {result.experiment_path}")
    _fail_if_failed(result.summary)


class SweepFailed(RuntimeError):
    """A sweep whose trials all errored, or none of which trained every epoch: exit status 1."""


def _fail_if_failed(summary: dict) -> None:
    from ecgtune.experiment import sweep_failure

    if why := sweep_failure(summary):
        raise SweepFailed(why)


def _report(args: argparse.Namespace) -> None:
    from ecgtune.report import report_experiment

    for path in report_experiment(args.experiment, outdir=args.out, top_k=args.top):
        print(path)


def _dashboard(args: argparse.Namespace) -> None:
    from ecgtune.study_dashboard import open_dashboard

    board = open_dashboard(args.run, port=args.port)
    # flush: a caller reading our stdout through a pipe (a script, a test) needs the URL before we block.
    print(f"optuna-dashboard for study {board.location.name}: {board.url}", flush=True)
    try:
        board.serve_forever()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how it is meant to end


def _export(args: argparse.Namespace) -> None:
    from ecgtune.report import export_best

    out, origin = export_best(args.experiment, args.out)
    trial, value = origin["trial_id"], origin["value"]
    print(f"wrote {out}: trial {trial}, objective {value:.3f} ({origin['epochs']} epochs)")
    print(f"train it with: ecgtune train {out} -o <output dir>")


def _train(args: argparse.Namespace) -> None:
    from ecgtune.data.demo import ensure_demo_data
    from ecgtune.final import train_final
    from ecgtune.spec import load_spec

    spec = load_spec(args.config)
    ensure_demo_data([spec.data.pretrain, spec.data.finetune])
    result = train_final(spec, args.out, patience=args.patience, force=args.force)
    print((Path(args.out) / "test_report.md").read_text())
    print(f"best fine-tuning epoch {result.best_epoch}; model and test results in {result.out_dir}")


def _predict(args: argparse.Namespace) -> None:
    from ecgtune.predict import format_predictions, predict_records

    print(format_predictions(predict_records(args.model, args.records), args.format))


def _demo(args: argparse.Namespace) -> None:
    """The whole path on the embedded data: data -> sweep -> report -> export -> train -> predict."""
    from ecgtune.data.demo import build_demo
    from ecgtune.data.locate import demo_root
    from ecgtune.final import RepeatedTestEvaluation, train_final
    from ecgtune.predict import format_predictions, predict_records
    from ecgtune.report import export_best, report_experiment
    from ecgtune.search import run_sweep
    from ecgtune.shipped import EXAMPLE_RECORD, sweep_spec_path
    from ecgtune.spec import load_spec
    from ecgtune.sweep_results import format_summary

    for store, reused in build_demo(demo_root()):
        print(("reused " if reused else "built ") + store.summary())
    result = run_sweep(sweep_spec_path("smoke"))  # shipped inside the package, like the example record
    print(format_summary(result.summary))
    _fail_if_failed(result.summary)
    experiment = Path(result.experiment_path)
    report_experiment(experiment)
    print(f"\nreport: {experiment / 'report' / 'report.md'}")
    best, origin = export_best(experiment, experiment / "best.yaml")
    print(f"exported the best full-fidelity trial ({origin['trial_id']}) to {best}")
    final = experiment / "final"
    try:
        train_final(load_spec(best), final)
    except RepeatedTestEvaluation as e:
        # The smoke sweep is seeded: a second demo finds the same best config, already tested.
        print(f"final training skipped: {e}")
        return
    print((final / "test_report.md").read_text())
    record = EXAMPLE_RECORD  # shipped inside the package: an installed ecgtune has it too
    print("prediction on a real PTB record (PhysioNet, s0010_re; ecgtune/examples/README.md):")
    print(format_predictions(predict_records(final, [str(record)])))


def _backbones_ls(args: argparse.Namespace) -> None:
    from ecgtune.backbones import BackboneStore, describe_entry

    store = BackboneStore(args.store)
    if not store.is_store():
        raise FileNotFoundError(f"{args.store}: not a backbone store (no STORE.json)")
    entries = list(store.entries())
    for entry in entries:
        print(describe_entry(entry))
    size = sum(e.bytes for e in entries) / 1e6
    print(f"{len(entries)} backbones, {size:.2f} MB of weights in {args.store}")


def _backbones_rm(args: argparse.Namespace) -> None:
    from ecgtune.backbones import BackboneStore

    store = BackboneStore(args.store)
    for key in args.keys:
        freed = store.remove(key)
        print(f"removed backbone {key} ({freed / 1e6:.2f} MB) from {args.store}")


def _simulate_epilog() -> str:
    from ecgtune.data.simulate import LABEL_DEFINITIONS

    return LABEL_DEFINITIONS


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be a function, called when the help is printed: the
    simulator's label definitions live beside its numpy code, which other commands need not import."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


_SET_HELP = (
    "override a setting of the spec, checked like the file (repeatable): a dotted KEY (search.num_samples, "
    "stages.finetune.epochs, data.pretrain) and a YAML VALUE (4, 1e-3, [8, 8], {path: x})"
)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ecgtune", description=__doc__)  # subparsers are made with the same class
    verbs = p.add_subparsers(dest="verb", required=True)

    data = verbs.add_parser("data", help="convert ECG sources into cached stores")
    dv = data.add_subparsers(dest="data_verb", required=True)
    d = dv.add_parser("demo", help="build the embedded demo stores (GAN DeepFake + PTB-XL-format stand-in)")
    d.add_argument(
        "--root", help="output directory (default: $ECGTUNE_DATA/demo, ECGTUNE_DATA defaults to ./data)"
    )
    d.add_argument("--rebuild", action="store_true")
    d.set_defaults(func=_data_demo)
    d = dv.add_parser("deepfake", help="convert the published DeepFake dataset (.asc + ground-truth CSV)")
    d.add_argument("root", help="dataset directory (with the ground-truth CSV(s) and .asc files)")
    d.add_argument("-o", "--out", required=True, help="store directory to write")
    d.add_argument("--limit", type=int, help="convert only the first N ECGs")
    d.add_argument("--rebuild", action="store_true")
    d.set_defaults(func=_data_deepfake)
    d = dv.add_parser("ptbxl", help="convert PTB-XL (records500 WFDB) with PTB-XL+ labels")
    d.add_argument("root", help="PTB-XL directory holding ptbxl_database.csv and records500/")
    d.add_argument("-o", "--out", required=True, help="store directory to write")
    d.add_argument("--features", help="PTB-XL+ directory or features CSV (default: ROOT/features/...)")
    d.add_argument("--label-source", default="12sl", choices=["12sl", "ecgdeli", "unig"])
    d.add_argument("--normal-only", action="store_true", help="keep ECGs with NORM at likelihood 100")
    d.add_argument("--limit", type=int)
    d.add_argument("--rebuild", action="store_true")
    d.set_defaults(func=_data_ptbxl)
    d = dv.add_parser("generate", help="generate DeepFake ECGs with the original GAN and label them")
    d.add_argument("-o", "--out", required=True)
    d.add_argument("-n", type=int, required=True, help="number of ECGs")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--labeller", default="neurokit2", help="neurokit2 (MIT, default) or ecgdeli (GPL, optional)"
    )
    d.add_argument("--workers", type=int, help="labelling processes (default: all cores)")
    d.add_argument("--batch-size", type=int, default=64)
    d.add_argument("--device", default="cpu")
    d.add_argument("--rebuild", action="store_true")
    d.set_defaults(func=_data_generate)
    d = dv.add_parser(
        "simulate",
        help="write a PTB-XL-format tree of simulated ECGs with exact labels (calibration data)",
        description="Write simulated 12-lead ECGs as a PTB-XL-format tree (records500/, records100/, "
        "ptbxl_database.csv, features/12sl_features.csv, simulation.json) whose HR, PR, QRS, QT labels "
        "are exact. Convert it with `ecgtune data ptbxl DIR -o STORE`.",
        epilog=_simulate_epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("-o", "--out", required=True, help="new (or empty) directory to write")
    d.add_argument("-n", type=int, required=True, help="number of ECGs")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--noise-level", default="realistic", choices=["clean", "low", "realistic", "high"],
                   help="recording noise: baseline wander, mains, EMG, electrode motion")  # fmt: skip
    d.add_argument("--label-noise", action="store_true",
                   help="write 12SL labels with program-to-program disagreement; exact ones go to "
                   "features/exact_labels.csv, the noise SDs and floor to simulation.json")  # fmt: skip
    d.add_argument("--workers", type=int, help="processes writing records (default: all cores)")
    d.add_argument("--rebuild", action="store_true", help="replace a tree this command wrote before")
    d.set_defaults(func=_data_simulate)
    d = dv.add_parser("info", help="summarise a store")
    d.add_argument("store")
    d.set_defaults(func=_data_info)

    v = verbs.add_parser("validate", help="check sweep specs / training configs without running them")
    v.add_argument("specs", nargs="+", help="spec files, or shipped sweeps' names (e.g. smoke)")
    v.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP
    )
    v.set_defaults(func=_validate)

    s = verbs.add_parser(
        "sweep", help="run a sweep spec on Ray Tune (local, or the cluster under `ray job submit`)"
    )
    s.add_argument(
        "spec", help="a spec file, or a shipped sweep's name (e.g. smoke; the repository's sweeps/)"
    )
    s.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP
    )
    s.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        help="continue an interrupted run (its path; default: the newest)",
    )
    s.add_argument(
        "--warm-start",
        nargs="+",
        default=[],
        metavar="RUN",
        help="start the searcher from the finished and stopped trials of earlier, compatible sweeps "
        "(their experiment directories)",
    )
    s.add_argument("--storage-path", help="override run.storage_path (local path or URI such as s3://...)")
    s.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    s.set_defaults(func=_sweep)

    r = verbs.add_parser(
        "report", help="tables, trials.csv and plots of a finished or running sweep (no Ray needed)"
    )
    r.add_argument("experiment", help="experiment directory: a local path or a URI such as s3://...")
    r.add_argument("-o", "--out", help="output directory or URI (default: EXPERIMENT/report)")
    r.add_argument("--top", type=int, default=5, help="trials in the top-k tables and plots (default 5)")
    r.set_defaults(func=_report)

    db = verbs.add_parser(
        "dashboard", help="optuna-dashboard on a sweep's Optuna study (127.0.0.1, read-only; Ctrl-C ends it)"
    )
    db.add_argument("run", help="experiment directory (local path or URI) holding the sweep's study.json")
    db.add_argument(
        "--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0: any free one)"
    )
    db.set_defaults(func=_dashboard)

    e = verbs.add_parser("export", help="write the best full-fidelity trial as a standalone training config")
    e.add_argument("experiment", help="experiment directory (local path or URI)")
    e.add_argument("-o", "--out", required=True, help="YAML file to write, e.g. best.yaml")
    e.set_defaults(func=_export)

    t = verbs.add_parser("train", help="final training from a config, then the one test-fold evaluation")
    t.add_argument("config", help="a standalone training config (e.g. from `ecgtune export`)")
    t.add_argument("-o", "--out", required=True, help="output directory (model, history, test results)")
    t.add_argument("--patience", type=int, default=5, help="early-stopping patience in fine-tuning epochs")
    t.add_argument("--force", action="store_true", help="evaluate on the test fold even if done before")
    t.set_defaults(func=_train)

    pr = verbs.add_parser("predict", help="predict HR, PR, QRS, QT for WFDB records or .asc files")
    pr.add_argument("model", help="a model directory written by `ecgtune train`")
    pr.add_argument("records", nargs="+", help="WFDB record paths (without extension) or .asc files")
    pr.add_argument("--format", choices=["table", "json", "csv"], default="table")
    pr.add_argument("--json", dest="format", action="store_const", const="json")
    pr.add_argument("--csv", dest="format", action="store_const", const="csv")
    pr.set_defaults(func=_predict)

    bb = verbs.add_parser("backbones", help="list or remove pretrained backbones of a backbone store")
    bv = bb.add_subparsers(dest="backbones_verb", required=True)
    b = bv.add_parser("ls", help="keys, sizes and what each backbone was pretrained on")
    b.add_argument(
        "store", help="the store: a sweep's run.backbones (default <storage_path>/backbones), or a URI"
    )
    b.set_defaults(func=_backbones_ls)
    b = bv.add_parser("rm", help="remove entries of a backbone store (nothing else)")
    b.add_argument("store", help="the store (a folder holding STORE.json), or a URI")
    b.add_argument("keys", nargs="+", help="keys to remove (as `ecgtune backbones ls` lists them)")
    b.set_defaults(func=_backbones_rm)

    dm = verbs.add_parser(
        "demo", help="demo data -> smoke sweep -> report -> export -> final training -> prediction"
    )
    dm.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:  # incl. FileNotFoundError and RepeatedTestEvaluation
        # Our errors name the file/key and what was expected; a traceback would only bury that.
        print(f"ecgtune {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except SweepFailed as e:
        # After the summary table: one line saying why, and a status `ray job submit` reads as FAILED.
        print(f"ecgtune {args.verb}: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        from ecgtune.data.labellers import LabellerNotInstalledError

        if not isinstance(e, LabellerNotInstalledError):
            raise  # a broken installation: the traceback says which module
        print(f"ecgtune {args.verb}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

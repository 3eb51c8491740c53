"""ecgtune never deletes what it did not write, never opens a file outside a dataset, and never loads
a record its readers would have to repair (issue 13, classes 1-3).

Each refusal is checked through the function a user calls (or the CLI), and the protected files are
compared byte for byte afterwards.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_data_deepfake import make_single_layout
from test_data_ptbxl import SPECS, database_rows, feature_labels, signals_12

from ecgtune.cli import main
from ecgtune.data.deepfake import GROUND_TRUTH_FILE, convert_deepfake, write_asc
from ecgtune.data.errors import RecordFormatError
from ecgtune.data.ptbxl import convert_ptbxl
from ecgtune.data.ptbxl_format import write_database, write_features, write_record
from ecgtune.data.store import ECGStore, StoreWriter
from ecgtune.data.wfdb_record import read_record
from ecgtune.paths import OutputPathError, claim_output_dir, inside_root
from ecgtune.report import export_best, report_experiment

FIXTURE_EXPERIMENT = Path(__file__).parent / "fixtures" / "experiment"


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256), so any change, addition or loss shows."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make_ptbxl_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A complete small PTB-XL folder (every record readable) with its PTB-XL+ features beside it."""
    root = tmp_path / "ptb-xl"
    write_database(root, database_rows(SPECS))
    for ecg_id, *_ in SPECS:
        write_record(root, ecg_id, signals_12(ecg_id))
    features = tmp_path / "ptb-xl-plus" / "features" / "12sl_features.csv"
    write_features(features, feature_labels([s[0] for s in SPECS]), "12sl")
    return root, features


# ------------------------------------------------------------------ 1. nothing a user names is deleted


def test_output_dir_with_an_unrelated_file_is_refused_and_the_file_kept(tmp_path, capsys):
    root, features = make_ptbxl_tree(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("three years of work")
    before = tree_digest(out)
    assert main(["data", "ptbxl", str(root), "-o", str(out), "--features", str(features)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "not an ecgtune store" in err[0]
    assert tree_digest(out) == before


@pytest.mark.parametrize(
    "where, why",
    [
        (lambda root: root, "is the input"),
        (lambda root: root / "records500", "lies inside the input"),
        (lambda root: root.parent, "contains the input"),
        (lambda root: root.parent / "ptb-xl-plus" / "features", "contains the input"),  # the features CSV
    ],
    ids=["the-dataset-itself", "inside-the-dataset", "containing-the-dataset", "the-features-folder"],
)
def test_output_overlapping_the_source_is_refused_before_any_work(tmp_path, where, why):
    root, features = make_ptbxl_tree(tmp_path)
    before = tree_digest(tmp_path)
    with pytest.raises(OutputPathError, match=why):
        convert_ptbxl(root, where(root), features=features)
    assert tree_digest(tmp_path) == before


def test_output_that_is_a_file_is_refused(tmp_path):
    root, features = make_ptbxl_tree(tmp_path)
    target = tmp_path / "labels.csv"
    target.write_text("keep me")
    with pytest.raises(OutputPathError, match="not a directory"):
        convert_ptbxl(root, target, features=features)
    assert target.read_text() == "keep me"


def test_an_existing_store_is_replaced_only_when_stale_or_asked(tmp_path):
    root, features = make_ptbxl_tree(tmp_path)
    out = tmp_path / "store"
    first, reused = convert_ptbxl(root, out, features=features)
    assert not reused
    _, reused = convert_ptbxl(root, out, features=features)
    assert reused  # same inputs: the store is kept as it is
    second, reused = convert_ptbxl(root, out, features=features, rebuild=True)
    assert not reused and len(second) == len(first)
    # No leftovers beside it (the old store, moved aside for the swap, is gone).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ptb-xl", "ptb-xl-plus", "store"]


def test_the_final_swap_refuses_what_appeared_at_the_path_meanwhile(tmp_path):
    out = tmp_path / "store"
    writer = StoreWriter(out, {"source": "test"})
    writer.append(
        np.zeros((1, 8, 5000), np.int16),
        pd.DataFrame(
            {
                "record_id": ["a"],
                "patient_id": ["a"],
                "split": ["train"],
                "hr": [60.0],
                "pr": [150.0],
                "qrs": [90.0],
                "qt": [400.0],
            }
        ),
    )
    out.mkdir()
    (out / "notes.txt").write_text("appeared while the store was built")
    with pytest.raises(OutputPathError, match="not an ecgtune store"):
        with writer:
            pass
    assert (out / "notes.txt").read_text() == "appeared while the store was built"
    assert [p.name for p in tmp_path.iterdir()] == ["store"]  # the half-built store is gone


def test_deepfake_output_inside_the_dataset_is_refused(tmp_path):
    root = tmp_path / "deepfake"
    make_single_layout(root, n=4)
    before = tree_digest(root)
    with pytest.raises(OutputPathError, match="lies inside the input"):
        convert_deepfake(root, root / "store")
    assert tree_digest(root) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "generate", "-n", "1", "-o", "{out}"],
        ["data", "demo", "--root", "{out}"],
        ["train", "{config}", "-o", "{out}"],
    ],
    ids=["generate", "demo", "train"],
)
def test_every_writing_command_refuses_a_directory_it_did_not_write(tmp_path, capsys, argv, monkeypatch):
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.csv").write_text("a,b\n1,2\n")
    config = tmp_path / "config.yaml"
    if "train" in argv:
        from synthetic import write_synthetic_store

        from ecgtune.spec import DataSpec, ModelSpec, Spec, StageSpec, StagesSpec, StoreSpec, dump_spec

        write_synthetic_store(tmp_path / "ptbxl", 20, seed=1, source="ptbxl")
        spec = Spec(
            name="t",
            model=ModelSpec(name="resnet_tiny"),
            data=DataSpec(finetune=StoreSpec(path=str(tmp_path / "ptbxl"))),
            stages=StagesSpec(pretrain=StageSpec(epochs=0), finetune=StageSpec(epochs=1)),
        )
        dump_spec(spec, config)
    before = tree_digest(tmp_path)
    assert main([a.format(out=out, config=config) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0], err
    assert tree_digest(tmp_path) == before


def test_train_refuses_an_output_inside_its_store(tmp_path):
    from synthetic import write_synthetic_store

    from ecgtune.final import claim_final_dir

    store = write_synthetic_store(tmp_path / "ptbxl", 20, seed=1, source="ptbxl")
    with pytest.raises(OutputPathError, match="lies inside the input"):
        claim_final_dir(tmp_path / "ptbxl" / "final", store)


def test_export_never_overwrites_a_file(tmp_path):
    target = tmp_path / "best.yaml"
    target.write_text("my hand-tuned config\n")
    with pytest.raises(OutputPathError, match="already exists"):
        export_best(FIXTURE_EXPERIMENT, target)
    assert target.read_text() == "my hand-tuned config\n"


def test_report_refuses_a_foreign_directory_and_rewrites_its_own(tmp_path):
    foreign = tmp_path / "paper"
    foreign.mkdir()
    (foreign / "draft.md").write_text("draft")
    with pytest.raises(OutputPathError, match="did not write"):
        report_experiment(FIXTURE_EXPERIMENT, outdir=foreign)
    assert [p.name for p in foreign.iterdir()] == ["draft.md"]
    ours = tmp_path / "report"
    report_experiment(FIXTURE_EXPERIMENT, outdir=ours)
    report_experiment(FIXTURE_EXPERIMENT, outdir=ours)  # its own directory: rewritten
    assert (ours / "report.md").is_file()


def test_claims_are_per_kind(tmp_path):
    claim_output_dir(tmp_path / "r", "report")
    with pytest.raises(OutputPathError, match="holds an ecgtune report"):
        claim_output_dir(tmp_path / "r", "demo")


# ------------------------------------------------------------------ 2. no file outside the dataset root


def test_inside_root_resolves_dots_absolute_paths_and_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "link")
    os.symlink(root / "a", root / "inner")
    assert inside_root(root, "a/x") == root / "a" / "x"
    assert inside_root(root, "inner/x") == root / "inner" / "x"  # a link that stays inside is fine
    for name in ("../elsewhere/x", "a/../../elsewhere/x", str(tmp_path / "elsewhere" / "x"), "link/x", ""):
        assert inside_root(root, name) is None, name


@pytest.mark.parametrize("escape", ["dots", "absolute", "symlink"])
def test_ptbxl_paths_leaving_the_root_are_skipped_unopened(tmp_path, escape, monkeypatch):
    root, features = make_ptbxl_tree(tmp_path)
    # A valid record of another dataset: loaded, if the reader ever followed the path there.
    other = write_record(tmp_path / "other-dataset", 2, signals_12(99))
    db = pd.read_csv(root / "ptbxl_database.csv")
    if escape == "dots":
        name = os.path.relpath(other, root)
    elif escape == "absolute":
        name = str(other)
    else:
        os.symlink(other.parent, root / "records500" / "linked")
        name = "records500/linked/00002_hr"
    db.loc[db["ecg_id"] == 2, "filename_hr"] = name
    db.to_csv(root / "ptbxl_database.csv", index=False)
    opened = []
    real = read_record
    monkeypatch.setattr("ecgtune.data.ptbxl.read_record", lambda p: (opened.append(p), real(p))[1])
    store, _ = convert_ptbxl(root, tmp_path / "store", features=features)
    assert store.provenance["skipped"] == {"path_outside_root": 1}
    assert "ecg_id 2" in store.provenance["skipped_examples"]["path_outside_root"][0]
    assert "2" not in set(store.labels["record_id"])
    assert len(opened) == len(SPECS) - 1 and not any("other-dataset" in str(p) for p in opened)


def test_wfdb_header_naming_a_signal_file_elsewhere_is_refused(tmp_path):
    base = write_record(tmp_path / "ds", 1, signals_12(1))
    hea = base.with_name(base.name + ".hea")
    hea.write_text(hea.read_text().replace("00001_hr.dat", "../../../../other.dat"))
    with pytest.raises(RecordFormatError, match="not a path") as e:
        read_record(base)
    assert e.value.reason == "path_outside_root"


def test_deepfake_patids_leaving_the_folder_are_skipped(tmp_path):
    root = tmp_path / "deepfake"
    gt = make_single_layout(root, n=6)
    write_asc(tmp_path / "secret.asc", np.ones((8, 5000), int) * np.arange(5000) % 300)
    gt["patid"] = gt["patid"].astype(str)
    gt.loc[2, "patid"] = "../../secret"
    gt.to_csv(root / GROUND_TRUTH_FILE, index=False)
    store, _ = convert_deepfake(root, tmp_path / "store")
    assert store.provenance["skipped"].get("path_outside_root") == 1
    assert "../../secret" not in set(store.labels["record_id"])


# ------------------------------------------------------------------ 3. no repaired record is loaded


def edited_header(tmp_path: Path, edit) -> Path:
    base = write_record(tmp_path / "ds", 1, signals_12(1))
    hea = base.with_name(base.name + ".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(edit(lines)) + "\n")
    return base


def _set_gain(lines: list[str], signal: int, gain: str) -> list[str]:
    fields = lines[signal].split()
    fields[2] = gain
    return [*lines[:signal], " ".join(fields), *lines[signal + 1 :]]


@pytest.mark.parametrize(
    "edit, reason, says",
    [
        (lambda ls: _set_gain(ls, 2, "0(0)/mV"), "invalid_gain", "ADC gain 0"),
        (lambda ls: _set_gain(ls, 2, "0"), "invalid_gain", "ADC gain 0"),
        (lambda ls: [*ls[:2], " ".join(ls[2].split()[:2]), *ls[3:]], "header_incomplete", "no ADC gain"),
        (lambda ls: [" ".join(ls[0].split()[:2]), *ls[1:]], "header_incomplete", "250 Hz"),
        (
            lambda ls: [ls[0].replace("00001_hr", "00007_hr", 1), *ls[1:]],
            "header_names_other_record",
            "names record '00007_hr'",
        ),
        (lambda ls: [*ls[:2], ls[2].rsplit(" ", 1)[0] + " I", *ls[3:]], "duplicate_lead", "appears twice"),
        (lambda ls: [ls[0].replace(" 12 ", " 11 ", 1), *ls[1:]], "malformed_header", "declares 11 signals"),
    ],
    ids=["gain-0", "gain-0-bare", "no-gain", "no-fs", "copied-header", "duplicate-lead", "signal-count"],
)
def test_header_fields_wfdb_would_repair_are_refused(tmp_path, edit, reason, says):
    base = edited_header(tmp_path, edit)
    with pytest.raises(RecordFormatError, match=says) as e:
        read_record(base)
    assert e.value.reason == reason
    assert "00001_hr" in str(e.value)


def test_header_units_absent_mean_millivolts_as_wfdb_defines(tmp_path):
    base = edited_header(tmp_path, lambda ls: [ls[0], *(line.replace("/mV", "") for line in ls[1:])])
    signals, _ = read_record(base)
    np.testing.assert_allclose(signals[0], signals_12(1)[0], atol=1e-3)


def test_copied_header_does_not_load_the_other_records_samples(tmp_path):
    """The measured case: 00002's header copied from 00001 reads 00001's samples under ecg_id 2."""
    first = write_record(tmp_path / "ds", 1, signals_12(1))
    second = write_record(tmp_path / "ds", 2, signals_12(2))
    second.with_name("00002_hr.hea").write_text(first.with_name("00001_hr.hea").read_text())
    with pytest.raises(RecordFormatError) as e:
        read_record(second)
    assert e.value.reason == "header_names_other_record"


def test_a_flat_lead_is_refused_in_both_formats(tmp_path):
    sig = signals_12(3)
    sig[7] = 0.0  # V2 lead-off
    base = write_record(tmp_path / "ds", 3, sig)
    with pytest.raises(RecordFormatError, match=r"\['V2'\]") as e:
        read_record(base)
    assert e.value.reason == "flat_lead"
    asc = np.rint(signals_12(3)[[0, 1, 6, 7, 8, 9, 10, 11]] * 1000).astype(int)
    asc[2] = 5  # V1 constant
    from ecgtune.data.deepfake import read_asc

    with pytest.raises(RecordFormatError, match=r"\['V1'\]"):
        read_asc(write_asc(tmp_path / "1.asc", asc))


def test_conversion_counts_each_reason_and_the_console_names_examples(tmp_path):
    root, features = make_ptbxl_tree(tmp_path)
    for ecg_id, edit in (
        (1, lambda ls: _set_gain(ls, 1, "0")),
        (3, lambda ls: [ls[0].replace("00003", "00004", 1), *ls[1:]]),
    ):
        hea = root / f"records500/00000/{ecg_id:05d}_hr.hea"
        hea.write_text("\n".join(edit(hea.read_text().splitlines())) + "\n")
    store, _ = convert_ptbxl(root, tmp_path / "store", features=features)
    assert store.provenance["skipped"] == {"invalid_gain": 1, "header_names_other_record": 1}
    text = ECGStore(store.path).summary()
    assert "invalid_gain: 1" in text and "00001_hr.hea" in text
    assert "header_names_other_record: 1" in text and "00003_hr.hea" in text


def test_deepfake_asc_files_without_a_ground_truth_row_are_counted(tmp_path):
    root = tmp_path / "deepfake"
    gt = make_single_layout(root, n=6)
    folder = next(p for p in root.iterdir() if p.is_dir())
    write_asc(folder / "orphan.asc", np.rint(signals_12(5)[:8] * 1000).astype(int))
    store, _ = convert_deepfake(root, tmp_path / "store")
    assert len(store) == len(gt)
    assert store.provenance["skipped"] == {"asc_without_labels": 1}
    assert "orphan.asc" in store.provenance["skipped_examples"]["asc_without_labels"][0]

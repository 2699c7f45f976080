"""Sharded extraction over worker processes (local spawn pool and Ray): the same store as one process, resuming
after kill -9 of the driver or of a worker, poison images, the CLI options."""

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
from recipe_data import colour_folder

from vggtransfer.cli import main as cli
from vggtransfer.data import datasets

REPO = Path(__file__).resolve().parents[1]


def _store(path):
    import h5py

    with h5py.File(path, "r") as fh:
        return (
            {k: fh[k][()] for k in ("features", "labels", "paths", "done", "ok", "error")},
            json.loads(fh.attrs["config"]),
            fh.attrs["items_sha256"],
        )


def _assert_same_store(a, b, rtol=1e-6):
    (da, ca, ia), (db, cb, ib) = _store(a), _store(b)
    assert ca == cb and ia == ib
    for k in ("labels", "paths", "done", "ok", "error"):
        assert np.array_equal(da[k], db[k]), k
    np.testing.assert_allclose(da["features"], db["features"], rtol=rtol, atol=1e-7)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return colour_folder(tmp_path_factory.mktemp("scale") / "photos", per_class=12)


@pytest.fixture(scope="module")
def reference(scaled_npy, photos, tmp_path_factory):
    """The single-process store."""
    out = tmp_path_factory.mktemp("ref") / "one.h5"
    assert (
        cli(
            [
                "extract",
                str(photos),
                "--store",
                str(out),
                "--weights",
                str(scaled_npy),
                "--scales",
                "48",
                "--precision",
                "fp32",
                "-q",
            ]
        )
        == 0
    )
    return out


def test_local_workers_store_equals_one_process_and_trains(scaled_npy, photos, reference, tmp_path, capsys):
    out = tmp_path / "two.h5"
    assert (
        cli(
            [
                "extract",
                str(photos),
                "--store",
                str(out),
                "--weights",
                str(scaled_npy),
                "--scales",
                "48",
                "--precision",
                "fp32",
                "--workers",
                "2",
                "--shard-size",
                "5",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "24/24 items" in printed and "2 workers, local processes" in printed
    assert "5 shards: 5 computed now, 0 already done" in printed
    assert not (tmp_path / "two.h5.shards").exists()  # merged, then removed
    _assert_same_store(reference, out)
    assert cli(["train", "--store", str(out), "--model", str(tmp_path / "m"), "--folds", "2", "-q"]) == 0
    # a rerun finds the finished store and does nothing
    assert (
        cli(
            [
                "extract",
                str(photos),
                "--store",
                str(out),
                "--weights",
                str(scaled_npy),
                "--scales",
                "48",
                "--precision",
                "fp32",
                "--workers",
                "2",
                "--shard-size",
                "5",
            ]
        )
        == 0
    )
    assert "0 computed now" in capsys.readouterr().out


def test_poison_image_is_a_row_error_not_a_failed_shard(scaled_npy, photos, tmp_path):
    from vggtransfer.scale.shards import ExtractorSpec, build_store_sharded

    ds = datasets.from_folder(photos)
    bad = tmp_path / "poison.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths = ds.paths[:5] + [str(bad)] + ds.paths[5:9]
    labels = np.r_[ds.labels[:5], 0, ds.labels[5:9]]
    mixed = datasets.Dataset(paths, labels, classes=ds.classes)
    spec = ExtractorSpec(
        str(scaled_npy),
        features={"end_points": ["pool5"], "poolings": ["avg"], "scales": [40], "view": "whole", "flip": False},
        precision="fp32",
    )
    report = build_store_sharded(tmp_path / "s.h5", mixed, spec, workers=2, threads=1, shard_size=4, progress=False)
    assert len(report.computed) == 3 and not report.worker_deaths
    data, _, _ = _store(tmp_path / "s.h5")
    assert data["done"].all() and data["ok"].tolist() == [i != 5 for i in range(10)]
    assert "poison.jpg" not in data["error"][5].decode() and data["error"][5]  # the reason, like build_store
    with pytest.raises(ValueError, match="workers must be a whole number >= 1, got 0"):
        build_store_sharded(tmp_path / "t.h5", mixed, spec, workers=0)
    with pytest.raises(ValueError, match="shard_size must be a whole number >= 1, got 0"):
        build_store_sharded(tmp_path / "t.h5", mixed, spec, shard_size=0)
    with pytest.raises(ValueError, match="retries must be a whole number >= 0, got -1"):
        build_store_sharded(tmp_path / "t.h5", mixed, spec, retries=-1)
    assert not (tmp_path / "t.h5").exists() and not (tmp_path / "t.h5.shards").exists()


def test_predict_sharded_checks_its_arguments_before_any_worker_starts(tmp_path):
    """Each of these once reached the workers (a bad precision crashed every worker's start-up three times and
    ended in 'process pool broken') or the arithmetic (shard_size 0: ZeroDivisionError)."""
    from vggtransfer.scale.shards import predict_sharded

    model = tmp_path / "reg"
    model.mkdir()
    (model / "vggtransfer.json").write_text(json.dumps({"kind": "auto", "task": "regression"}))
    out = tmp_path / "out.csv"
    for kwargs, message in [
        ({"shard_size": 0}, "shard_size must be a whole number >= 1, got 0"),
        ({"precision": "x"}, "precision must be one of"),
        ({"top_k": 0}, "top_k must be a whole number >= 1, got 0"),
        ({"top_k": 2}, "a regressor has no top_k"),
        ({"threads": 0}, "threads must be a whole number >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            predict_sharded(model, ["a.jpg"], out, progress=False, **kwargs)
    assert not out.exists() and not (tmp_path / "out.csv.shards").exists()


def _start(args, tmp_path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "vggtransfer.cli", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_shards(shards: Path, k: int, proc, timeout=240) -> list:
    t0 = time.time()
    while time.time() - t0 < timeout:
        done = sorted(shards.glob("shard-*.json"))
        if len(done) >= k:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no shard finished in time")


def _children(pid: int) -> list:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out


def _slow_job(photos, store, scaled_npy):
    return [
        "extract",
        str(photos),
        "--store",
        str(store),
        "--weights",
        str(scaled_npy),
        "--scales",
        "48,160",
        "--flip",
        "--precision",
        "fp32",
        "--workers",
        "2",
        "--shard-size",
        "2",
        "--threads",
        "1",
    ]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_kill_9_driver_then_rerun_finishes_without_recomputing(scaled_npy, photos, tmp_path):
    store = tmp_path / "k.h5"
    proc = _start(_slow_job(photos, store, scaled_npy), tmp_path)
    shards = tmp_path / "k.h5.shards"
    _wait_for_shards(shards, 2, proc)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for w in workers:  # orphaned workers finish their shard and exit; make sure they are gone before comparing
        try:
            os.kill(w, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = {p.name: json.loads(p.read_text()) for p in shards.glob("shard-*.json")}
    assert 0 < len(before) < 12 and not store.exists()
    again = _start(_slow_job(photos, store, scaled_npy), tmp_path)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert f"12 shards: {12 - len(before)} computed now, {len(before)} already done" in out
    for name, stats in before.items():  # finished shards were not recomputed: they are not in this run's list
        assert f"shard {stats['shard']:05d}:" not in out.split("already done", 1)[1]
    data, _, _ = _store(store)
    ds = datasets.from_folder(photos)
    assert [p.decode() for p in data["paths"]] == ds.paths and data["done"].all() and data["ok"].all()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_kill_9_of_a_worker_is_reported_and_its_shard_retried(scaled_npy, photos, tmp_path):
    store = tmp_path / "w.h5"
    proc = _start(_slow_job(photos, store, scaled_npy), tmp_path)
    _wait_for_shards(tmp_path / "w.h5.shards", 1, proc)
    workers = [c for c in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert "worker died" in err and "retry 1 of 2" in err
    assert "worker death(s) retried" in out
    data, _, _ = _store(store)
    assert data["done"].all() and data["ok"].all() and len(set(data["paths"].tolist())) == 24


@pytest.fixture(scope="module")
def model(scaled_npy, reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m"
    assert cli(["train", "--store", str(reference), "--model", str(path), "--folds", "2", "-q"]) == 0
    return path


@pytest.fixture(scope="module")
def to_predict(photos, tmp_path_factory):
    bad = tmp_path_factory.mktemp("bad") / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    paths = datasets.from_folder(photos).paths
    return paths[:7] + [str(bad)] + paths[7:]


def _same_predictions_csv(a, b):
    """The same rows in the same order, classes and errors equal, probabilities equal to float32 rounding (one process
    and single-threaded workers round matmuls differently in the last bit; a temperature below 1 raises that to
    about 1e-5 relative on a probability of 1e-48)."""
    import csv

    ra, rb = (list(csv.DictReader(open(f))) for f in (a, b))
    assert [(r["path"], r["rank"], r["class"], r["error"]) for r in ra] == [
        (r["path"], r["rank"], r["class"], r["error"]) for r in rb
    ]
    pa, pb = ([float(r["probability"] or "nan") for r in rows] for rows in (ra, rb))
    np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=0)


def test_predict_workers_write_the_same_results_in_order(scaled_npy, model, to_predict, tmp_path, capsys):
    common = [
        "predict",
        "--model",
        str(model),
        *to_predict,
        "--weights",
        str(scaled_npy),
        "--precision",
        "fp32",
        "--top-k",
        "2",
    ]
    assert cli(common + ["--out", str(tmp_path / "one.csv")]) == 1  # one unreadable image: exit 1
    assert "bad.png\terror:" in capsys.readouterr().err
    assert (
        cli(common + ["--out", str(tmp_path / "two.csv"), "--workers", "2", "--shard-size", "4", "--threads", "1"]) == 1
    )
    out, err = capsys.readouterr()
    assert "25 images, 1 could not be predicted" in out and "7 shards: 7 computed now" in out
    _same_predictions_csv(tmp_path / "one.csv", tmp_path / "two.csv")
    lines = (tmp_path / "one.csv").read_text().splitlines()
    assert lines[0] == "path,rank,class,probability,error" and len(lines) == 1 + 24 * 2 + 1
    assert cli(common + ["--out", str(tmp_path / "two.jsonl"), "--workers", "2"]) == 1
    rows = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == to_predict and rows[7]["error"] and rows[0]["top_k"][0]["class"] == "blue"
    capsys.readouterr()
    assert cli(common + ["--workers", "2"]) == 2
    assert "--out FILE.csv or FILE.jsonl" in capsys.readouterr().err
    assert cli(common + ["--out", str(tmp_path / "x.txt")]) == 2
    assert "expected a .csv or .jsonl" in capsys.readouterr().err


def test_ray_store_and_predictions_equal_one_process(
    scaled_npy, photos, reference, model, to_predict, tmp_path, capsys
):
    from conftest import require_module

    require_module("ray")
    out = tmp_path / "ray.h5"
    try:
        assert (
            cli(
                [
                    "extract",
                    str(photos),
                    "--store",
                    str(out),
                    "--weights",
                    str(scaled_npy),
                    "--scales",
                    "48",
                    "--precision",
                    "fp32",
                    "--ray",
                    "--workers",
                    "2",
                    "--shard-size",
                    "7",
                    "--threads",
                    "1",
                ]
            )
            == 0
        )
        printed = capsys.readouterr().out
        assert (
            cli(
                [
                    "predict",
                    "--model",
                    str(model),
                    *to_predict,
                    "--weights",
                    str(scaled_npy),
                    "--precision",
                    "fp32",
                    "--out",
                    str(tmp_path / "ray.csv"),
                    "--ray",
                    "--workers",
                    "2",
                    "--shard-size",
                    "9",
                ]
            )
            == 1
        )
        assert (
            cli(
                [
                    "predict",
                    "--model",
                    str(model),
                    *to_predict,
                    "--weights",
                    str(scaled_npy),
                    "--precision",
                    "fp32",
                    "--out",
                    str(tmp_path / "one.csv"),
                ]
            )
            == 1
        )
        from vggtransfer.scale.shards import ScaleError, predict_sharded

        with pytest.raises(ScaleError, match=r"^a worker could not start: WeightsError: .*gone.npy: no such weights"):
            predict_sharded(model, to_predict, tmp_path / "r.csv", weights=tmp_path / "gone.npy", use_ray=True)
    finally:
        import ray

        ray.shutdown()
    assert "2 workers, Ray" in printed and "4 shards: 4 computed now" in printed
    _assert_same_store(reference, out)
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "one.csv").read_text()


def test_scale_options_are_checked(scaled_npy, photos, tmp_path, capsys):
    assert (
        cli(
            [
                "extract",
                str(photos),
                "--store",
                str(tmp_path / "x.h5"),
                "--weights",
                str(scaled_npy),
                "--shard-size",
                "4",
            ]
        )
        == 2
    )
    assert "--shard-size: only with --workers or --ray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["extract", str(photos), "--store", str(tmp_path / "x.h5"), "--workers", "0"])
    assert "--workers: expected a whole number >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"end_point": "pool9"}, "unknown end point 'pool9' for vgg16"),
        ({"pooling": "median"}, "pooling must be one of"),
        ({"image_size": 16}, "image_size must be a whole number >= 32"),
        ({"precision": "fp16"}, "precision must be one of"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"arch": "vgg11"}, "unknown architecture 'vgg11'"),
        ({"features": {"end_points": ["conv5_4"]}}, "unknown end point 'conv5_4' for vgg16"),
        ({"features": {"scales": [8]}}, "scales must be distinct sizes of at least 32 px"),
    ],
)
def test_an_extractor_spec_is_checked_where_it_is_made(kwargs, message):
    """Before: checked only inside each worker, so a typo failed every worker's start-up and every retry, and ended
    in 'process pool broken'."""
    from vggtransfer.scale.worker import ExtractorSpec

    with pytest.raises(ValueError, match=message):
        ExtractorSpec("weights-read-by-the-workers.npy", **kwargs)


def test_a_worker_that_cannot_start_stops_the_job_with_its_own_message(model, to_predict, tmp_path, capfd):
    """Before: the error was raised in the pool's initializer, which broke the pool, printed the worker's traceback
    and was retried twice before 'process pool broken'. Now: one attempt, one line, the worker's reason."""
    from vggtransfer.scale.shards import ScaleError, predict_sharded

    log: list = []
    with pytest.raises(ScaleError, match=r"^a worker could not start: WeightsError: .*gone.npy: no such weights"):
        predict_sharded(
            model,
            to_predict,
            tmp_path / "r.csv",
            weights=tmp_path / "gone.npy",
            workers=2,
            shard_size=2,
            log=log.append,
        )
    assert not log  # no retry notices: a start-up error is the same on every attempt
    assert "Traceback" not in capfd.readouterr().err

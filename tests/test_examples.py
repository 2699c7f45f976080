"""The two examples the design card names, run as a user runs them (each in its own process): the main job's
``train_length_regressor.py`` end to end on a few real photos with the real weights, and
``download_imagenet_urls.py`` against a server on 127.0.0.1 (the lists fetched, then the images). Every documented
option is passed at least once; bad options are one usage line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from local_http import jpeg, png

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}


def example(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        check=False,
        timeout=600,
    )


def test_the_main_job_example_runs_end_to_end(tiger_cat_dir, real_weights, tmp_path):
    """15 + 15 real photos; the figures are not judged here (too few photos), only that every output is made and
    consistent: the model restores in a fresh process and predicts the demo photos."""
    demo = sorted(p for p in (tiger_cat_dir / "demo").rglob("*") if p.is_file())
    res = example(
        "train_length_regressor.py",
        *("--data", tiger_cat_dir / "data", "--weights", real_weights, "--per-class", 15, "--test-fraction", 0.2),
        *("--model-dir", tmp_path / "model", "--out", tmp_path / "out", "--precision", "auto", "--seed", 3),
        *("--quiet", "--demo", *demo),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "15 tiger + 15 cat photos" in res.stdout and "24 for training (incl. validation), 6 held out" in res.stdout
    assert "Traceback" not in res.stderr and "\r" not in res.stderr  # --quiet: no progress bars
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_test"] == 6 and metrics["rmse"] > 0 and metrics["oracle_rmse"] > 0
    assert metrics["ratio"] == pytest.approx(metrics["rmse"] / metrics["oracle_rmse"], rel=1e-6)
    assert 0 <= metrics["auc"] <= 1 and metrics["selection"]["model"] == "dense"
    assert sorted(metrics["demo"]) == [str(p) for p in demo]
    assert all(0 < v < 500 for v in metrics["demo"].values())
    for png_name in ("length_histograms.png", "learning_curves.png", "heldout_predictions.png"):
        assert (tmp_path / "out" / png_name).stat().st_size > 1000
    assert (tmp_path / "model" / "vggtransfer.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--test-fraction", 0), "--test-fraction: expected a number in (0, 1)"),
        (("--test-fraction", 1.5), "--test-fraction: expected a number in [0, 1), got '1.5'"),
        (("--per-class", 0), "--per-class: expected a whole number >= 1, got '0'"),
        (("--precision", "fp16"), "--precision: invalid choice: 'fp16'"),
        (("--data", "/nonexistent/photos"), "No images found in /nonexistent/photos/tiger"),
    ],
)
def test_the_main_job_example_refuses_bad_options_in_one_line(args, message, tmp_path):
    res = example("train_length_regressor.py", *args, cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_the_download_example_fetches_the_lists_then_the_images(http_server, tmp_path):
    lists = {
        "imagenet_tiger.txt": [http_server.url(f"/t{i}.jpg") for i in range(3)],
        "imagenet_kittycat.txt": [http_server.url(f"/c{i}.png") for i in range(3)] + ["not a url"],
    }
    for name, urls in lists.items():
        http_server.routes[f"/lists/{name}"] = [(200, "\n".join(urls).encode())]
    for i in range(3):
        http_server.routes[f"/t{i}.jpg"] = [(200, jpeg(i, (96, 64)))]
        http_server.routes[f"/c{i}.png"] = [(500, b"busy"), (200, png(10 + i, (64, 64)))]  # retried
    data = tmp_path / "data"
    res = example(
        "download_imagenet_urls.py",
        *("--data", data, "--lists-url", http_server.url("/lists/"), "--max-per-class", 2, "--workers", 2),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    assert len(list((data / "tiger").iterdir())) == 2 and len(list((data / "kittycat").iterdir())) == 2
    assert (data / "lists" / "imagenet_tiger.txt").read_text().startswith("http://127.0.0.1")
    assert (data / "manifest.jsonl").is_file()
    # the same command again: the lists are not fetched twice, nothing is downloaded again
    hits = dict(http_server.hits)
    res = example(
        "download_imagenet_urls.py",
        *("--data", data, "--lists-url", http_server.url("/lists/"), "--max-per-class", 2, "--no-progress"),
    )
    assert res.returncode == 0, res.stderr
    assert http_server.hits["/lists/imagenet_tiger.txt"] == hits["/lists/imagenet_tiger.txt"] == 1
    # local lists instead of a fetch; a missing one is named
    res = example("download_imagenet_urls.py", "--data", tmp_path / "d2", "--lists", tmp_path / "nowhere")
    assert res.returncode == 2 and "missing URL list(s)" in res.stderr and "imagenet_tiger.txt" in res.stderr
    res = example("download_imagenet_urls.py", "--data", tmp_path / "d3", "--lists-url", http_server.url("/gone/"))
    assert res.returncode == 2 and "could not fetch the URL lists from http://127.0.0.1" in res.stderr

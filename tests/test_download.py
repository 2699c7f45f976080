"""vggtransfer.data.download against a local HTTP server (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_http import LocalServer, big_png, body, fail_then, jpeg, no_length, png, redirect, short, slow, tiny_gif

from vggtransfer.data.download import (
    MANIFEST_NAME,
    download_images,
    download_url_lists,
    read_manifest,
    read_url_list,
    safe_name,
)
from vggtransfer.data.images import decode_image_bytes

REPO = Path(__file__).resolve().parents[1]
FAST = dict(timeout=(1.0, 0.4), backoff=0.01, progress=False, max_bytes=200_000, max_pixels=1_000_000)
SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def files_in(folder: Path) -> dict:
    """{relative posix path: sha256} of every file under folder except the manifest."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def outcomes(manifest: Path) -> dict:
    return {url: rec["status"] for (_, url), rec in read_manifest(manifest).items()}


TRAVERSAL = [
    "/t/..%2F..%2Ftrav1.jpg",
    "/t/%2e%2e/%2e%2e/trav2",
    "/t/..%5C..%5Ctrav3.jpg",
    "/t/%2Fetc%2Ftrav4",
    "/t/trav5-%E8%B2%93%E5%92%AA%E2%80%AE.jpg",
    "/t/trav6-" + "a" * 300 + ".jpg",
    "/t/.trav7",
    "/t/trav8%00.jpg",
    "/t/CON?trav9",
    "/t/..?trav10",
]


def traversal_fallback(path):
    if "trav" in path or path.startswith("/etc") or path == "/":
        return body(jpeg(abs(hash(path)) % 10_000 + 1000))
    return None


@pytest.fixture()
def server():
    same = jpeg(7)
    placeholder = jpeg(99, size=(120, 90))
    routes = {
        "/img/cat.jpg": body(jpeg(1)),
        "/img/dog.png": body(png(2), "image/png"),
        "/missing.jpg": body(b"<html>not found</html>", "text/html", 404),
        "/forbidden.jpg": body(b"no", "text/plain", 403),
        "/flaky.jpg": fail_then(jpeg(3), failures=1, status=500),
        "/down.jpg": fail_then(jpeg(4), failures=100, status=503),
        "/page.jpg": body(b"<!DOCTYPE html><html><body>Photo not found</body></html>", "text/html"),
        "/empty.jpg": body(b""),
        "/redirect.jpg": redirect("/img/target.jpg"),
        "/img/target.jpg": body(jpeg(5)),
        "/loop1.jpg": redirect("/loop2.jpg"),
        "/loop2.jpg": redirect("/loop1.jpg"),
        "/slow.jpg": slow(1.5, jpeg(6)),
        "/short.jpg": short(jpeg(8)[:500], 20_000),
        "/huge.jpg": body(b"\xff\xd8" + b"\0" * 300_000),
        "/huge-nolen.jpg": no_length(b"\xff\xd8" + b"\0" * 300_000),
        "/bomb.png": body(big_png(2000, 2000), "image/png"),
        "/tiny.gif": body(tiny_gif(), "image/gif"),
        "/a/same.jpg": body(same),
        "/b/copy.jpg": body(same),
        "/x/photo.jpg": body(jpeg(10)),
        "/y/photo.jpg": body(jpeg(11)),
        **{f"/ph/{i}.jpg": body(placeholder) for i in range(4)},
    }
    with LocalServer(routes, fallback=traversal_fallback) as srv:
        srv.same, srv.placeholder = same, placeholder
        yield srv


EXPECTED = {
    "/img/cat.jpg": "saved",
    "/img/dog.png": "saved",
    "/missing.jpg": "dead",
    "/forbidden.jpg": "dead",
    "/flaky.jpg": "saved",
    "/down.jpg": "server_error",
    "/page.jpg": "not_image",
    "/empty.jpg": "not_image",
    "/redirect.jpg": "saved",
    "/loop1.jpg": "bad_redirect",
    "/slow.jpg": "timeout",
    "/short.jpg": "truncated",
    "/huge.jpg": "too_large",
    "/huge-nolen.jpg": "too_large",
    "/bomb.png": "too_large",
    "/tiny.gif": "placeholder",
    "/a/same.jpg": "saved",
    "/b/copy.jpg": "duplicate",
    "/x/photo.jpg": "saved",
    "/y/photo.jpg": "saved",
    **{f"/ph/{i}.jpg": "placeholder" for i in range(4)},
    **{p: "saved" for p in TRAVERSAL},
}


def test_every_outcome_and_exact_files(server, tmp_path):
    out = tmp_path / "deep" / "out"
    urls = [server.url(p) for p in EXPECTED] + ["ftp://127.0.0.1/x.jpg"]
    summary = download_images(urls, out, workers=8, per_host=8, **FAST)
    got = outcomes(out / MANIFEST_NAME)
    want = {server.url(p): s for p, s in EXPECTED.items()} | {"ftp://127.0.0.1/x.jpg": "invalid_url"}
    assert got == want
    assert summary.counts["saved"] == sum(1 for s in EXPECTED.values() if s == "saved")
    assert server.hits["/flaky.jpg"] == 2  # 500 then 200: retried once
    assert server.hits["/missing.jpg"] == 1 and server.hits["/forbidden.jpg"] == 1  # 4xx never retried
    assert server.hits["/down.jpg"] == 3  # 5xx: 1 + 2 retries

    files = files_in(out)
    # Nothing outside the output folder, no sub-folders, only safe names.
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")} == {
        "deep",
        "deep/out",
        f"deep/out/{MANIFEST_NAME}",
    } | {f"deep/out/{n}" for n in files}
    for name in files:
        assert SAFE.match(name) and len(name) <= 120, name
    records = read_manifest(out / MANIFEST_NAME)
    saved_paths = {rec["path"] for rec in records.values() if rec["status"] == "saved"}
    assert saved_paths == set(files)
    fixed = {n: h for n, h in files.items() if not n.startswith("trav")}
    assert fixed.keys() >= {"cat.jpg", "dog.png", "flaky.jpg", "redirect.jpg", "same.jpg"}
    assert not any(n.startswith("copy") for n in files)  # duplicate stored once, under the first URL's name
    photos = sorted(n for n in files if n.startswith("photo"))
    assert len(photos) == 2 and len(set(files[n] for n in photos)) == 2  # same last segment, two files
    trav_paths = {records[("", server.url(t))]["path"] for t in TRAVERSAL}
    assert len(trav_paths) == len(TRAVERSAL) and trav_paths <= set(files)
    assert sha(server.placeholder) not in files.values()
    assert files["same.jpg"] == sha(server.same)
    # Original bytes, not re-encoded; the manifest has status, size, hash.
    cat = records[("", server.url("/img/cat.jpg"))]
    assert cat["http_status"] == 200 and cat["bytes"] == len(jpeg(1)) and cat["sha256"] == sha(jpeg(1))
    assert (out / "cat.jpg").read_bytes() == jpeg(1)
    assert records[("", server.url("/redirect.jpg"))]["final_url"].endswith("/img/target.jpg")
    assert records[("", server.url("/b/copy.jpg"))]["path"] == "same.jpg"
    assert "Content-Length" in records[("", server.url("/huge.jpg"))]["reason"]
    assert "pixels" in records[("", server.url("/bomb.png"))]["reason"]
    assert "HTML" in records[("", server.url("/page.jpg"))]["reason"]
    assert records[("", server.url("/missing.jpg"))]["http_status"] == 404


def test_rerun_keeps_done_and_retries_transient(server, tmp_path):
    out = tmp_path / "out"
    urls = [server.url(p) for p in EXPECTED]
    download_images(urls, out, **FAST)
    before = files_in(out)
    hits = dict(server.hits)
    (out / ".cat.jpg.part").write_bytes(b"half")  # a leftover partial file
    server.routes["/slow.jpg"] = body(jpeg(6))  # the slow server recovered
    summary = download_images(urls, out, **FAST)
    after = files_in(out)
    assert not (out / ".cat.jpg.part").exists()
    assert set(after) == set(before) | {"slow.jpg"}
    assert all(after[n] == h for n, h in before.items())
    assert summary.counts["saved"] == 1 and summary.counts["kept"] == sum(1 for s in EXPECTED.values() if s == "saved")
    # Done URLs are not fetched again; transient failures are.
    for path in ("/img/cat.jpg", "/missing.jpg", "/page.jpg", "/b/copy.jpg", "/ph/0.jpg", "/bomb.png"):
        assert server.hits[path] == hits[path], path
    for path in ("/short.jpg", "/down.jpg"):
        assert server.hits[path] > hits[path], path
    assert outcomes(out / MANIFEST_NAME)[server.url("/slow.jpg")] == "saved"
    # A saved file deleted by the user is downloaded again.
    (out / "dog.png").unlink()
    download_images(urls, out, **FAST)
    assert files_in(out)["dog.png"] == before["dog.png"]


def test_placeholder_detected_across_runs_and_first_copy_removed(tmp_path):
    ph = jpeg(42, size=(100, 80))
    routes = {f"/p{i}.jpg": body(ph) for i in range(3)} | {"/ok.jpg": body(jpeg(1))}
    with LocalServer(routes) as srv:
        out = tmp_path / "out"
        download_images([srv.url("/p0.jpg"), srv.url("/p1.jpg"), srv.url("/ok.jpg")], out, **FAST)
        assert set(files_in(out)) == {"p0.jpg", "ok.jpg"}  # two copies: below the threshold, stored once
        summary = download_images([srv.url(f"/p{i}.jpg") for i in range(3)] + [srv.url("/ok.jpg")], out, **FAST)
    assert set(files_in(out)) == {"ok.jpg"}
    got = outcomes(out / MANIFEST_NAME)
    assert [got[srv.url(f"/p{i}.jpg")] for i in range(3)] == ["placeholder"] * 3
    assert summary.counts["placeholder"] == 3 and summary.counts["kept"] == 1


def test_placeholder_result_does_not_depend_on_timing(tmp_path):
    ph = jpeg(43, size=(100, 80))
    routes = {f"/p{i}.jpg": slow(0.02 * (5 - i), ph) for i in range(5)} | {"/ok.jpg": body(jpeg(1))}
    with LocalServer(routes) as srv:
        for workers in (1, 5):
            out = tmp_path / f"out{workers}"
            download_images(
                [srv.url(f"/p{i}.jpg") for i in range(5)] + [srv.url("/ok.jpg")],
                out,
                workers=workers,
                per_host=workers,
                **FAST,
            )
            assert set(files_in(out)) == {"ok.jpg"}
            assert sorted(outcomes(out / MANIFEST_NAME).values()) == ["placeholder"] * 5 + ["saved"]


def test_max_images_and_url_lists(tmp_path):
    routes = {f"/c/{i}.jpg": body(jpeg(100 + i)) for i in range(10)}
    routes |= {f"/d/{i}.png": body(png(200 + i), "image/png") for i in range(3)}
    routes["/c/404.jpg"] = body(b"x", "text/plain", 404)
    with LocalServer(routes) as srv:
        cats = tmp_path / "cats.txt"
        cats.write_text(
            "# cats\n\n"
            + "\n".join(srv.url(f"/c/{i}.jpg") for i in [*range(10)])
            + "\nnot a url\n"
            + srv.url("/c/1.jpg")
            + "\n"
        )
        urls = read_url_list(cats)
        assert len(urls) == 10 and urls.invalid == [(13, "not a url", "not an http(s) URL")]
        dogs = [srv.url(f"/d/{i}.png") for i in range(3)] + [srv.url("/c/404.jpg")]
        summary = download_url_lists(
            {"cat": cats, "dog": dogs}, tmp_path / "data", max_per_class=4, workers=3, per_host=3, **FAST
        )
    files = files_in(tmp_path / "data")
    assert len([f for f in files if f.startswith("cat/")]) == 4
    assert {f for f in files if f.startswith("dog/")} == {"dog/0.png", "dog/1.png", "dog/2.png"}
    assert summary.per_class["dog"] == {"saved": 3, "dead": 1}
    assert summary.per_class["cat"]["saved"] == 4 and summary.invalid_lines == 1
    recs = read_manifest(tmp_path / "data" / MANIFEST_NAME)
    assert {rec["class"] for rec in recs.values()} == {"cat", "dog"}


def test_safe_name():
    assert safe_name("http://h/a/b/c%20d.jpg") == "c_d.jpg"
    for url in ("http://h/..", "http://h/%2e%2e", "http://h/..%2f..%2f", "http://h/", "http://h/%00", "http://h/.x"):
        name = safe_name(url)
        assert SAFE.match(name) and "/" not in name and not name.startswith("."), (url, name)
    assert len(safe_name("http://h/" + "\u00e9" * 500 + ".jpg", unique=True)) <= 100
    assert safe_name("http://h/x/p.jpg", unique=True) != safe_name("http://h/y/p.jpg", unique=True)
    assert safe_name("http://h/nul.jpg").lower() != "nul.jpg"


def test_host_that_refuses_connections_is_marked_dead(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port now
    urls = [f"http://127.0.0.1:{port}/{i}.jpg" for i in range(40)]
    start = time.monotonic()
    summary = download_images(urls, tmp_path / "out", host_failure_limit=3, **FAST)
    assert time.monotonic() - start < 10
    assert summary.counts == {"unreachable": 40}
    recs = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    assert sum("not tried" in rec["reason"] for rec in recs.values()) >= 37
    assert files_in(tmp_path / "out") == {}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST_NAME]


def run_cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "vggtransfer.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        **kw,
    )


def test_cli_errors(tmp_path):
    res = run_cli("download", tmp_path / "nope.txt", "--out", tmp_path / "o")
    assert res.returncode == 2 and "error:" in res.stderr and "nope.txt" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("download", tmp_path, "--out", tmp_path / "o")
    assert res.returncode == 2 and "error:" in res.stderr and "Traceback" not in res.stderr
    lst = tmp_path / "a.txt"
    lst.write_text("")
    res = run_cli("download", lst, "--out", tmp_path / "o", "--max-per-class", "zero")
    assert res.returncode == 2 and "--max-per-class" in res.stderr and "Traceback" not in res.stderr
    # a list with lines but no URL at all is the wrong file (a labels CSV, say): refused, nothing made
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nphotos/a.jpg,cat\n")
    res = run_cli("download", csv, "--out", tmp_path / "o2")
    assert res.returncode == 2 and "labels.csv: none of its 2 lines is an http(s) URL (line 1" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o2").exists()


def test_cli_download(tmp_path):
    routes = {f"/{i}.jpg": body(jpeg(300 + i)) for i in range(3)}
    with LocalServer(routes) as srv:
        lst = tmp_path / "tiger.txt"
        lst.write_text("\n".join(srv.url(f"/{i}.jpg") for i in range(3)) + "\n" + srv.url("/gone.jpg") + "\n")
        res = run_cli("download", lst, "--out", tmp_path / "data", "--no-progress", "--timeout", "1,1")
    assert res.returncode == 0, res.stderr
    assert "3 saved" in res.stdout and "1 dead" in res.stdout
    assert set(files_in(tmp_path / "data")) == {"tiger/0.jpg", "tiger/1.jpg", "tiger/2.jpg"}


def test_sigkill_midway_then_rerun_completes(tmp_path):
    n = 40
    images = {f"/k/{i}.jpg": jpeg(500 + i, size=(96, 64)) for i in range(n)}
    routes = {p: body(d) for p, d in images.items()}
    routes |= {f"/k/gone{i}.jpg": body(b"x", "text/plain", 404) for i in range(5)}
    with LocalServer(routes, latency=0.08) as srv:
        lst = tmp_path / "cls.txt"
        lst.write_text("\n".join(srv.url(p) for p in routes) + "\n")
        out = tmp_path / "out"
        args = ["download", lst, "--out", out, "--no-progress", "--workers", "2", "--per-host", "2"]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, "-m", "vggtransfer.cli", *map(str, args)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        manifest = out / MANIFEST_NAME
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if manifest.exists() and manifest.read_text().count("\n") >= 10:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        lines = manifest.read_text().count("\n")
        assert 10 <= lines < n + 5, "the run was not killed midway"
        # Whatever is under a final name is complete.
        for p in (out / "cls").iterdir():
            if not p.name.endswith(".part"):
                decode_image_bytes(p.read_bytes(), str(p))
        res = run_cli(*args)
        assert res.returncode == 0, res.stderr
    files = files_in(out)
    assert not [f for f in files if f.endswith(".part") or "/." in f]
    assert sorted(files.values()) == sorted(sha(d) for d in images.values())  # every image once, no duplicates
    assert set(files) == {f"cls/{i}.jpg" for i in range(n)}
    got = outcomes(manifest)
    assert sorted(got.values()) == ["dead"] * 5 + ["saved"] * n

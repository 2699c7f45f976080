"""Benchmark: `vggtransfer download` vs the tutorial's sequential urlretrieve loop, against local servers that add
100 ms of latency to every response (127.0.0.1 only).

    PYTHONPATH=. python bench/bench_download.py               # 1,000 URLs, 3 interleaved repetitions (~7 min)
    PYTHONPATH=. python bench/bench_download.py --n 200 --reps 1   # quick

The URL mix: 88 % distinct JPEGs of 30-80 KB, 6 % 404s, 4 % one "photo unavailable" 500x374 PNG served for many
URLs, 2 % HTML pages with status 200. The URLs are spread over --hosts servers (ports of 127.0.0.1, each one "host"
for the per-host limit) in proportions like the tutorial's lists (farm1.static.flickr.com alone is 36 % of them).
Configurations, run interleaved per repetition: the sequential baseline; `vggtransfer download` with its defaults
(16 workers, 4 per host) over the multi-host list; and the same over one host with --per-host 16.
Each run gets a fresh output folder. The valid images each produced are compared by content hash: the baseline's
files are cleaned as the tutorial's author did by hand (drop what does not decode, tiny images, and content that
repeats for 3+ URLs); the result must equal vggtransfer's saved files and the expected set.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import environment, save  # noqa: E402
from vggtransfer.data.download import read_manifest  # noqa: E402
from vggtransfer.data.images import ImageError, decode_image_bytes  # noqa: E402

HOST_SHARES = [0.36, 0.16, 0.15, 0.10, 0.08, 0.06, 0.05, 0.04]


def make_jpeg(rng, target_kb):
    """A JPEG of roughly target_kb: a smooth gradient with noise, like a photo (not pure noise)."""
    w = int(rng.integers(320, 500))
    h = int(w * 0.75)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack(
        [(x * rng.uniform(0.2, 0.6)) % 256, (y * rng.uniform(0.2, 0.6)) % 256, ((x + y) * rng.uniform(0.1, 0.4)) % 256],
        -1,
    )
    amp = 2 + target_kb * 0.55
    arr = np.clip(base + rng.normal(0, amp, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def build_corpus(n, seed=0):
    rng = np.random.default_rng(seed)
    routes, kinds = {}, {}
    ph = io.BytesIO()
    Image.new("RGB", (500, 374), (235, 235, 235)).save(ph, "PNG")
    placeholder = ph.getvalue()
    html = b"<!DOCTYPE html><html><body><h1>This photo is no longer available</h1></body></html>"
    for i in range(n):
        r = i % 50
        if r < 3:
            path, kind = f"/gone/{i}.jpg", "dead"
        elif r < 5:
            path, kind = f"/ph/{i}.jpg", "placeholder"
            routes[path] = (200, "image/png", placeholder)
        elif r < 6:
            path, kind = f"/page/{i}.jpg", "html"
            routes[path] = (200, "text/html", html)
        else:
            path, kind = f"/img/{i}.jpg", "image"
            routes[path] = (200, "image/jpeg", make_jpeg(rng, int(rng.integers(30, 80))))
        kinds[path] = kind
    return routes, kinds


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        time.sleep(self.server.latency)
        status, ctype, data = self.server.routes.get(self.path, (404, "text/html", b"<html>404 Not Found</html>"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_server(routes, latency):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, address: None  # clients closing idle keep-alive connections
    httpd.routes, httpd.latency = routes, latency
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def tutorial_loop(urls, folder):
    """The tutorial's download(): urlretrieve one URL after another, errors swallowed."""
    os.makedirs(folder, exist_ok=True)
    for url in urls:
        try:
            urllib.request.urlretrieve(url, os.path.join(folder, url.split("/")[-1]))
        except:  # noqa: E722 - as in the tutorial
            pass


def cleaned_hashes(folder):
    """The by-hand cleaning the tutorial's author did: keep what decodes, drop tiny images and repeated content."""
    hashes = {}
    for p in Path(folder).iterdir():
        data = p.read_bytes()
        try:
            img = decode_image_bytes(data, str(p))
        except ImageError:
            continue
        if min(img.size) < 32 or len(data) < 1024:
            continue
        hashes[p] = hashlib.sha256(data).hexdigest()
    counts = collections.Counter(hashes.values())
    return {h for h in hashes.values() if counts[h] < 3}


def run_vggtransfer(list_file, out, extra=()):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vggtransfer.cli",
            "download",
            str(list_file),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"vggtransfer download failed ({res.returncode}):\n{res.stderr}")
    recs = read_manifest(out / "manifest.jsonl").values()  # the latest record per URL
    saved = {r["sha256"] for r in recs if r["status"] == "saved"}
    files = [p for p in (out / list_file.stem).iterdir()] if (out / list_file.stem).exists() else []
    assert len(files) == len(saved), "files on disk differ from the manifest"
    return wall, saved, res.stdout.strip().splitlines()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--hosts", type=int, default=len(HOST_SHARES))
    args = ap.parse_args()

    routes, kinds = build_corpus(args.n)
    expected = {hashlib.sha256(d).hexdigest() for p, (s, c, d) in routes.items() if kinds[p] == "image"}
    sizes = [len(d) for p, (s, c, d) in routes.items() if kinds[p] == "image"]
    servers = [start_server(routes, args.latency) for _ in range(args.hosts)]
    shares = np.array(HOST_SHARES[: args.hosts]) / sum(HOST_SHARES[: args.hosts])
    rng = np.random.default_rng(1)
    paths = list(routes.keys() | kinds.keys())
    paths.sort(key=lambda p: int(p.rsplit("/", 1)[1].split(".")[0]))
    host_of = rng.choice(len(servers), size=len(paths), p=shares)
    multi = [f"http://127.0.0.1:{servers[h].server_address[1]}{p}" for p, h in zip(paths, host_of)]
    single = [f"http://127.0.0.1:{servers[0].server_address[1]}{p}" for p in paths]
    print(
        f"{len(paths)} URLs: {collections.Counter(kinds.values())}; JPEG sizes {min(sizes) // 1024}-"
        f"{max(sizes) // 1024} KB (median {int(statistics.median(sizes)) // 1024} KB); {args.hosts} hosts; "
        f"latency {args.latency * 1000:.0f} ms",
        flush=True,
    )

    env = environment()
    work = Path(tempfile.mkdtemp(prefix="bench_download_"))
    (work / "multi").mkdir()
    (work / "single").mkdir()
    multi_list = work / "multi" / "bench.txt"
    single_list = work / "single" / "bench.txt"
    multi_list.write_text("\n".join(multi) + "\n")
    single_list.write_text("\n".join(single) + "\n")
    times = collections.defaultdict(list)
    try:
        for rep in range(args.reps):
            out = work / f"seq{rep}"
            start = time.perf_counter()
            tutorial_loop(single, out)
            times["sequential urlretrieve"].append(time.perf_counter() - start)
            base = cleaned_hashes(out)
            shutil.rmtree(out)
            assert base == expected, f"baseline valid set differs ({len(base)} vs {len(expected)})"
            print(f"rep {rep}: sequential {times['sequential urlretrieve'][-1]:.1f} s, {len(base)} valid", flush=True)
            for label, lst, extra in (
                ("vggtransfer download (defaults, multi-host)", multi_list, ()),
                ("vggtransfer download (1 host, --per-host 16)", single_list, ("--per-host", "16")),
            ):
                out = work / f"v{rep}{len(times)}"
                wall, saved, line = run_vggtransfer(lst, out, extra)
                times[label].append(wall)
                shutil.rmtree(out)
                assert saved == expected, f"{label}: valid set differs ({len(saved)} vs {len(expected)})"
                print(f"rep {rep}: {label} {wall:.1f} s: {line}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for s in servers:
            s.shutdown()

    seq = statistics.median(times["sequential urlretrieve"])
    print(
        f"\n{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, n={len(paths)}, "
        f"reps={args.reps}; same set of {len(expected)} valid images from every run"
    )
    for label, ts in times.items():
        med = statistics.median(ts)
        print(
            f"{label:48s} median {med:7.2f} s  (runs {', '.join(f'{t:.1f}' for t in ts)})  "
            f"{seq / med:5.1f}x vs sequential"
        )
    path = save(
        "download",
        {
            "benchmark": "vggtransfer download vs sequential urlretrieve, local servers with added latency",
            "command": "python bench/bench_download.py " + " ".join(sys.argv[1:]),
            "env": env,
            "urls": len(paths),
            "valid_images": len(expected),
            "hosts": args.hosts,
            "latency_s": args.latency,
            "reps": args.reps,
            "runs_s": dict(times),
            "median_s": {label: statistics.median(ts) for label, ts in times.items()},
            "speedup_vs_sequential": {label: seq / statistics.median(ts) for label, ts in times.items()},
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()

"""The tests' one HTTP server, threaded, on 127.0.0.1 (downloads, weight fetching, the README's CLI lines): routes map
a raw request path to a behaviour (a function of the request handler) or to a list of ``(status, body)`` replies
served in turn."""

from __future__ import annotations

import collections
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


def jpeg(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(seed: int, size=(48, 48), mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def big_png(width: int, height: int) -> bytes:
    """A flat PNG of width x height: tiny on the wire, huge once decoded (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("L", (width, height), 0).save(buf, "PNG")
    return buf.getvalue()


def tiny_gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (1, 1), 0).save(buf, "GIF")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------ behaviours
def body(data: bytes, ctype: str = "image/jpeg", status: int = 200):
    def serve(h):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return serve


def fail_then(data: bytes, failures: int = 1, status: int = 500):
    """``failures`` responses with ``status``, then ``data`` with 200."""
    count = {"n": 0}
    lock = threading.Lock()

    def serve(h):
        with lock:
            count["n"] += 1
            n = count["n"]
        if n <= failures:
            body(b"<html>busy</html>", "text/html", status)(h)
        else:
            body(data)(h)

    return serve


def redirect(location: str, status: int = 302):
    def serve(h):
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return serve


def slow(delay: float, data: bytes):
    def serve(h):
        time.sleep(delay)
        body(data)(h)

    return serve


def short(data: bytes, claimed: int):
    """Claims ``claimed`` bytes, sends ``data`` (fewer), closes the connection."""

    def serve(h):
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(claimed))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()
        h.close_connection = True

    return serve


def no_length(data: bytes):
    """A close-delimited body (no Content-Length)."""

    def serve(h):
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)
        h.close_connection = True

    return serve


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.hits[self.path] += 1
        if server.latency:
            time.sleep(server.latency)
        route = server.routes.get(self.path)
        if route is None and server.fallback is not None:
            route = server.fallback(self.path)
        if route is None:
            route = body(b"<html><body>404 Not Found</body></html>", "text/html", 404)
        if isinstance(route, list):  # [(status, body), ...]: served in turn, the last one repeated
            with server.lock:
                status, data = route.pop(0) if len(route) > 1 else route[0]
            route = body(data, "application/octet-stream", status)
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass


class LocalServer:
    """``with LocalServer(routes) as srv: srv.url('/a.jpg')``; ``srv.hits[path]`` counts requests."""

    def __init__(self, routes=None, latency: float = 0.0, fallback=None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients that hang up are expected here
        self.httpd.block_on_close = False
        self.httpd.routes = dict(routes or {})
        self.httpd.latency = latency
        self.httpd.fallback = fallback
        self.httpd.hits = collections.Counter()
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def routes(self):
        return self.httpd.routes

    @property
    def hits(self):
        return self.httpd.hits

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

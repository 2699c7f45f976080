"""Fetching one URL: the downloader's HTTP session, the request with size and time limits, the validation of the
body as an image, and host name look-ups ahead of a run."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import time

import requests

from vggtransfer.core.http import make_session as http_session
from vggtransfer.data.images import ImageError, decode_image_bytes

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
USER_AGENT = "vggtransfer-download/0.1 (+https://github.com/; research image list downloader)"

#: Every outcome a URL can have, with what it means. ``saved`` and ``kept`` have a file; the rest do not.


# ----------------------------------------------------------------------------------------------------------- session
def make_session(
    *, workers: int = 16, retries: int = 2, backoff: float = 0.25, max_redirects: int = 5, user_agent: str = USER_AGENT
) -> requests.Session:
    """The downloader's session (:func:`vggtransfer.core.http.make_session`): ``workers`` pooled connections per host;
    connection errors and statuses 429/500-599 retried ``retries`` times with backoff, a read error once; other 4xx
    and host names that do not resolve never; Retry-After headers ignored so a hostile server cannot stall the run."""
    return http_session(
        connections=workers,
        retries=retries,
        read_retries=1,
        backoff=backoff,
        backoff_max=4.0,
        max_redirects=max_redirects,
        user_agent=user_agent,
        accept="image/*,*/*;q=0.5",
    )


# ------------------------------------------------------------------------------------------------------------ worker
@dataclasses.dataclass
class _Fetched:
    status: str  # "ok" or a failure status from STATUSES
    reason: str = ""
    http_status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    body: bytes | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    connect_failure: bool = False
    dns_failure: bool = False
    elapsed: float = 0.0


def _describe_exc(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 exception, short."""
    inner = exc
    for _ in range(4):
        args = getattr(inner, "args", ())
        if args and isinstance(args[0], BaseException):
            inner = args[0]
        elif isinstance(getattr(inner, "reason", None), BaseException):
            inner = getattr(inner, "reason")
        else:
            break
    text = str(inner) or type(inner).__name__
    return f"{type(inner).__name__}: {text}"[:300]


def _fetch(
    session: requests.Session, url: str, timeout, max_bytes: int, max_pixels: int, min_side: int, min_bytes: int
) -> _Fetched:
    start = time.monotonic()
    out = _fetch_inner(session, url, timeout, max_bytes, max_pixels, min_side, min_bytes)
    out.elapsed = round(time.monotonic() - start, 3)
    return out


def _fetch_inner(session, url, timeout, max_bytes, max_pixels, min_side, min_bytes) -> _Fetched:
    try:
        resp = session.get(url, timeout=timeout, stream=True, allow_redirects=True)
    except requests.exceptions.TooManyRedirects as exc:
        return _Fetched("bad_redirect", f"too many redirects (loop?): {_describe_exc(exc)}")
    except (
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidURL,
    ) as exc:
        return _Fetched("bad_redirect", f"redirect to an unusable URL: {exc}"[:300])
    except requests.exceptions.ConnectTimeout as exc:
        return _Fetched("unreachable", f"connect timeout: {_describe_exc(exc)}", connect_failure=True)
    except requests.exceptions.ReadTimeout as exc:
        return _Fetched("timeout", f"read timeout: {_describe_exc(exc)}")
    except requests.exceptions.SSLError as exc:
        return _Fetched("unreachable", f"TLS error: {_describe_exc(exc)}", connect_failure=True)
    except requests.exceptions.ConnectionError as exc:
        text = _describe_exc(exc)
        if "Read timed out" in text or "ReadTimeout" in text:
            return _Fetched("timeout", f"read timeout: {text}")
        if "ProtocolError" in text or "RemoteDisconnected" in text or "IncompleteRead" in text:
            return _Fetched("truncated", f"connection broken: {text}")
        dns = "NameResolutionError" in text or "Failed to resolve" in text or "gaierror" in text
        return _Fetched("unreachable", text, connect_failure=True, dns_failure=dns)
    except requests.exceptions.RequestException as exc:
        return _Fetched("error", _describe_exc(exc))

    with resp:
        info = dict(
            http_status=resp.status_code,
            final_url=resp.url if resp.url != url else None,
            content_type=resp.headers.get("Content-Type"),
        )
        if resp.status_code >= 400:
            kind = "server_error" if resp.status_code >= 500 or resp.status_code in (429, 408) else "dead"
            return _Fetched(kind, f"HTTP {resp.status_code} {resp.reason or ''}".strip(), **info)
        if resp.status_code != 200:
            return _Fetched("error", f"unexpected HTTP {resp.status_code} {resp.reason or ''}".strip(), **info)
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            return _Fetched("too_large", f"Content-Length {int(length):,} B is over max_bytes {max_bytes:,}", **info)
        chunks, size = [], 0
        try:
            for chunk in resp.iter_content(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    return _Fetched("too_large", f"body is over max_bytes {max_bytes:,} B", **info)
                chunks.append(chunk)
        except requests.exceptions.ChunkedEncodingError as exc:
            got = f" (got {size:,} of {length} B)" if length else ""
            return _Fetched("truncated", f"body ended early{got}: {_describe_exc(exc)}", **info)
        except requests.exceptions.ConnectionError as exc:
            text = _describe_exc(exc)
            if "timed out" in text.lower():
                return _Fetched("timeout", f"read timeout while receiving the body: {text}", **info)
            return _Fetched("truncated", f"connection broken while receiving the body: {text}", **info)
        except requests.exceptions.RequestException as exc:
            return _Fetched("error", _describe_exc(exc), **info)
    body = b"".join(chunks)
    sha = hashlib.sha256(body).hexdigest()
    try:
        img = decode_image_bytes(body, url, max_pixels=max_pixels)
    except ImageError as exc:
        reason = exc.reason
        if "over the limit" in reason or "decompression bomb" in reason:
            kind = "too_large"
        else:
            kind = "not_image"
        return _Fetched(kind, reason, sha256=sha, **info)
    width, height, fmt = img.width, img.height, (img.format or "").upper()
    img.close()
    common = dict(sha256=sha, width=width, height=height, format=fmt, **info)
    if min(width, height) < min_side or len(body) < min_bytes:
        return _Fetched(
            "placeholder",
            f"tiny image ({width}x{height}, {len(body):,} B; minimum side {min_side} px, minimum size {min_bytes:,} B)",
            **common,
        )
    return _Fetched("ok", "", body=body, **common)


def _resolve_hosts(hosts, threads: int = 64) -> dict:
    """Look up host names in parallel; returns ``{host: error}`` for the names that do not resolve.

    Done once per host before any download so that a list of dead hosts costs one lookup per host, in parallel
    (a resolver that times out takes 5 s per name). IP literals are not looked up.
    """
    import ipaddress
    import socket

    names = {}
    for host in hosts:
        name, _, port = host.rpartition(":")
        try:
            ipaddress.ip_address(name.strip("[]"))
            continue
        except ValueError:
            names[host] = (name, int(port))

    def look(item):
        host, (name, port) = item
        try:
            socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
            return host, None
        except (socket.gaierror, UnicodeError, OSError) as exc:
            return host, f"{type(exc).__name__}: {exc}"

    failed: dict = {}
    if not names:
        return failed
    with cf.ThreadPoolExecutor(max_workers=min(threads, len(names)), thread_name_prefix="vggtransfer-dns") as pool:
        for host, error in pool.map(look, names.items()):
            if error:
                failed[host] = error
    return failed

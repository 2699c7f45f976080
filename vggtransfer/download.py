"""Download image URL lists into folders you can trust and rerun.

What the tutorial's ``urlretrieve`` loop left to the user, done here:

* a bounded thread pool (``workers``) with a per-host limit (``per_host``), connect/read timeouts, and retries with
  backoff for connection errors and 5xx/429 (urllib3 ``Retry``; never for other 4xx);
* every body is validated before it is kept: it must decode as an image (:func:`vggtransfer.images.decode_image_bytes`),
  be under ``max_bytes`` and ``max_pixels``, and not be a placeholder ("photo unavailable" images that hosts serve with
  status 200: the same content for ``placeholder_min_urls`` or more URLs, or a tiny image). The original bytes are
  kept, nothing is converted;
* file names come from the URL but are sanitised and always land inside the output folder; two URLs with the same
  last segment get distinct names; identical content is stored once;
* resumable: a file only appears under its final name once complete (``.name.part`` + rename), every outcome is
  appended to ``manifest.jsonl`` and flushed as it happens, and a rerun skips what is done and retries what failed
  transiently (timeouts, unreachable hosts, 5xx, truncated bodies);
* a host that fails to connect ``host_failure_limit`` times (after retries) is marked dead: its remaining URLs are
  classified ``unreachable`` without being tried, so a list of dead hosts ends promptly.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import posixpath
import re
import time
import unicodedata
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .images import MAX_PIXELS, MIN_SIDE, ImageError, decode_image_bytes

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DownloadSummary",
    "MANIFEST_NAME",
    "STATUSES",
    "TRANSIENT",
    "UrlList",
    "download_images",
    "download_url_lists",
    "make_session",
    "read_manifest",
    "read_url_list",
    "safe_name",
]

MANIFEST_NAME = "manifest.jsonl"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
USER_AGENT = "vggtransfer-download/0.1 (+https://github.com/; research image list downloader)"

#: Every outcome a URL can have, with what it means. ``saved`` and ``kept`` have a file; the rest do not.
STATUSES = {
    "saved": "downloaded, validated and saved in this run",
    "kept": "saved by an earlier run; the file is still there and unchanged",
    "duplicate": "same content as another saved URL (stored once; 'path' names that file)",
    "placeholder": "a 'photo unavailable' image: identical content served for many URLs, or a tiny image",
    "dead": "HTTP 4xx (not found, gone, forbidden, ...): not retried",
    "server_error": "HTTP 5xx (or 429) after retries",
    "unreachable": "could not connect (DNS, refused, connect timeout), or the host was marked dead",
    "timeout": "the server stopped sending (read timeout) after retries",
    "truncated": "the connection closed before the whole body arrived",
    "not_image": "the body is not an image (HTML, text, empty, unknown format, corrupt)",
    "too_large": "the body is over max_bytes or the image is over max_pixels",
    "bad_redirect": "redirect loop, too many redirects, or a redirect to a non-HTTP URL",
    "invalid_url": "not an http(s) URL",
    "skipped": "not kept: this class already has max_per_class images",
    "error": "unexpected error (see reason)",
}
#: Outcomes that a rerun tries again; the others are final.
TRANSIENT = frozenset({"server_error", "unreachable", "timeout", "truncated", "skipped", "error"})

_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp",
               "MPO": ".jpg", "ICO": ".ico", "PPM": ".ppm"}
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_MAX_STEM = 80


# --------------------------------------------------------------------------------------------------------- URL lists
class UrlList(list):
    """A list of URLs read from a file; ``invalid`` holds ``(line_number, text, reason)`` for lines left out."""

    def __init__(self, urls=(), invalid=(), path=None):
        super().__init__(urls)
        self.invalid = list(invalid)
        self.path = path


def _check_url(url: str) -> str | None:
    """Return why ``url`` is not a usable http(s) URL, or None."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        return f"cannot parse URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"not an http(s) URL (scheme {parts.scheme!r})" if parts.scheme else "not an http(s) URL"
    if not parts.hostname:
        return "URL has no host"
    if any(c.isspace() for c in url):
        return "URL contains whitespace"
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        return f"bad port ({exc})"
    return None


def read_url_list(path) -> UrlList:
    """Read one URL per line. Blank lines and ``#`` comments are skipped; repeated URLs are kept once.

    Lines that are not http(s) URLs are left out and listed in the result's ``invalid`` attribute as
    ``(line_number, text, reason)``. Raises ``FileNotFoundError`` / ``IsADirectoryError`` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such URL list file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected a URL list file")
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    urls, invalid, seen = [], [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        problem = _check_url(line)
        if problem:
            invalid.append((lineno, line[:200], problem))
        elif line not in seen:
            seen.add(line)
            urls.append(line)
    return UrlList(urls, invalid, path)


# -------------------------------------------------------------------------------------------------------- file names
def _url_stem(url: str) -> str:
    """The URL's last path segment, decoded, reduced to a safe ``[A-Za-z0-9._-]`` stem without its extension."""
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        path = ""
    segment = urllib.parse.unquote(path)
    segment = segment.replace("\\", "/").rstrip("/")
    segment = segment.rsplit("/", 1)[-1]
    segment = unicodedata.normalize("NFKD", segment).encode("ascii", "ignore").decode("ascii")
    stem = posixpath.splitext(segment)[0] if "." in segment.lstrip(".") else segment
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip("._-")
    stem = stem[:_MAX_STEM].rstrip("._-")
    if not stem:
        stem = "image"
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = "_" + stem
    return stem


def _url_tag(url: str) -> str:
    return hashlib.sha1(url.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def safe_name(url: str, ext: str = ".jpg", unique: bool = False) -> str:
    """A file name for ``url``: its sanitised last segment + ``ext``; ``unique`` appends a tag derived from the URL.

    The result never contains a path separator, never starts with a dot, and is at most ~100 characters.
    """
    stem = _url_stem(url)
    if unique:
        stem = f"{stem}-{_url_tag(url)}"
    return stem + ext


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing anything that would resolve outside ``folder`` (defence in depth)."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith(".") or "\0" in name:
        raise ValueError(f"unsafe file name {name!r}")
    path = folder / name
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"file name {name!r} escapes {folder}")
    return path


# ---------------------------------------------------------------------------------------------------------- manifest
def read_manifest(path) -> dict:
    """The latest record per ``(class, url)`` in a manifest file (later lines override earlier ones).

    A torn last line (the process was killed while writing it) is ignored.
    """
    return {(rec.get("class", ""), rec["url"]): rec for rec in _all_manifest_records(Path(path))}


def _all_manifest_records(path: Path):
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "url" in rec and "status" in rec:
                yield rec


# ----------------------------------------------------------------------------------------------------------- session
class _Retry(Retry):
    """urllib3 Retry that gives up at once when a host name does not resolve (a rerun tries again).

    Retrying DNS failures only multiplies resolver timeouts: a list with hundreds of dead hosts would take minutes.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, urllib3.exceptions.NameResolutionError):
            raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def make_session(*, workers: int = 16, retries: int = 2, backoff: float = 0.25, max_redirects: int = 5,
                 user_agent: str = USER_AGENT) -> requests.Session:
    """A ``requests`` session with a pool of ``workers`` connections per host and urllib3 retries.

    Retries (with exponential backoff) apply to connection errors, read errors and statuses 429/500-599 on GET;
    other 4xx are never retried, nor are host names that do not resolve. Retry-After headers are ignored so a hostile server cannot stall the run.
    """
    retry = _Retry(
        total=None,
        connect=retries,
        read=1,
        status=retries,
        other=0,
        redirect=False,  # requests follows redirects itself (max_redirects)
        allowed_methods=frozenset({"GET", "HEAD"}),
        status_forcelist=frozenset({429, *range(500, 600)}),
        backoff_factor=backoff,
        backoff_max=4.0,
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=max(16, workers), pool_maxsize=max(1, workers), max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = max_redirects
    session.headers["User-Agent"] = user_agent
    session.headers["Accept"] = "image/*,*/*;q=0.5"
    return session


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
        elif getattr(inner, "reason", None) is not None and isinstance(inner.reason, BaseException):
            inner = inner.reason
        else:
            break
    text = str(inner) or type(inner).__name__
    return f"{type(inner).__name__}: {text}"[:300]


def _fetch(session: requests.Session, url: str, timeout, max_bytes: int, max_pixels: int,
           min_side: int, min_bytes: int) -> _Fetched:
    start = time.monotonic()
    out = _fetch_inner(session, url, timeout, max_bytes, max_pixels, min_side, min_bytes)
    out.elapsed = round(time.monotonic() - start, 3)
    return out


def _fetch_inner(session, url, timeout, max_bytes, max_pixels, min_side, min_bytes) -> _Fetched:
    try:
        resp = session.get(url, timeout=timeout, stream=True, allow_redirects=True)
    except requests.exceptions.TooManyRedirects as exc:
        return _Fetched("bad_redirect", f"too many redirects (loop?): {_describe_exc(exc)}")
    except (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidURL) as exc:
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
        info = dict(http_status=resp.status_code, final_url=resp.url if resp.url != url else None,
                    content_type=resp.headers.get("Content-Type"))
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
        return _Fetched("placeholder", f"tiny image ({width}x{height}, {len(body):,} B; minimum side {min_side} px, "
                                       f"minimum size {min_bytes:,} B)", **common)
    return _Fetched("ok", "", body=body, **common)


# ----------------------------------------------------------------------------------------------------------- summary
@dataclasses.dataclass
class DownloadSummary:
    """What a run did. ``counts`` maps each outcome in :data:`STATUSES` to a number of URLs."""

    counts: dict
    per_class: dict
    manifest: Path
    out_dir: Path
    elapsed_s: float
    total: int
    files: list
    invalid_lines: int = 0
    interrupted: bool = False

    @property
    def saved(self) -> int:
        """Valid images present after the run (saved now + kept from earlier runs)."""
        return self.counts.get("saved", 0) + self.counts.get("kept", 0)

    def format(self) -> str:
        """A one-paragraph human summary of the run (saved, failed, skipped counts)."""
        order = [s for s in STATUSES if self.counts.get(s)]
        parts = ", ".join(f"{self.counts[s]} {s}" for s in order) or "nothing to do"
        lines = [f"{self.total} URLs in {self.elapsed_s:.1f} s: {parts}"]
        if len(self.per_class) > 1 or any(self.per_class):
            for cls, counts in self.per_class.items():
                have = counts.get("saved", 0) + counts.get("kept", 0)
                lines.append(f"  {cls or '.'}: {have} images ({', '.join(f'{v} {k}' for k, v in counts.items())})")
        if self.invalid_lines:
            lines.append(f"  {self.invalid_lines} lines of the URL lists are not http(s) URLs (left out)")
        lines.append(f"manifest: {self.manifest}")
        if self.interrupted:
            lines.append("interrupted: rerun the same command to continue")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# ------------------------------------------------------------------------------------------------------------ engine
@dataclasses.dataclass
class _Item:
    cls: str
    url: str
    order: int
    host: str
    name_unique: bool = False


class _Run:
    """One download run over (class, url) items; all bookkeeping happens on the calling thread."""

    def __init__(self, items, class_dirs: Mapping[str, Path], root: Path, manifest: Path, *, session, workers,
                 per_host, timeout, max_bytes, max_pixels, max_per_class, placeholder_min_urls, min_side, min_bytes,
                 host_failure_limit, progress, fsync, resolve_first=True):
        self.items = items
        self.class_dirs = {c: Path(d) for c, d in class_dirs.items()}
        self.root = Path(root)
        self.manifest_path = Path(manifest)
        self.session = session
        self.workers = max(1, int(workers))
        self.per_host = max(1, int(per_host))
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.max_per_class = max_per_class
        self.placeholder_min_urls = placeholder_min_urls
        self.min_side = min_side
        self.min_bytes = min_bytes
        self.host_failure_limit = host_failure_limit
        self.progress = progress
        self.fsync = fsync
        self.resolve_first = resolve_first
        self.counts = collections.Counter()
        self.per_class = {c: collections.Counter() for c in self.class_dirs}
        self.state = {}  # (cls, url) -> current record (from manifest or this run)
        self.hash_urls = collections.defaultdict(set)  # sha256 -> {(cls, url)} that served it (any run)
        self.hash_file = {}  # sha256 -> (cls, url) of the saved owner
        self.placeholder_hashes = set()
        self.taken_names = {}  # (cls, lower-case name) -> url
        self.host_failures = collections.Counter()
        self.dead_hosts = set()
        self.host_ok = set()  # hosts that have answered with an HTTP status in this run
        self.saved_per_class = collections.Counter()
        self._mf = None

    # ---- manifest
    def _rel(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix()

    def _abs(self, rel: str) -> Path:
        return self.root / rel

    def _record(self, item_key, status, **fields):
        rec = {"url": item_key[1], "class": item_key[0], "status": status}
        rec.update({k: v for k, v in fields.items() if v is not None and v != ""})
        rec["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._mf.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._mf.flush()
        self.state[item_key] = rec
        return rec

    def _load_previous(self):
        """Read the manifest of earlier runs: what is done, which files are ours, which hashes were seen where."""
        latest = {}
        ever_saved = collections.defaultdict(set)  # path -> hashes saved there
        for rec in _all_manifest_records(self.manifest_path):
            key = (rec.get("class", ""), rec["url"])
            latest[key] = rec
            if rec["status"] in ("saved", "kept") and rec.get("path"):
                ever_saved[rec["path"]].add(rec.get("sha256"))
        claimed = set()
        verified = {}
        for key, rec in latest.items():
            if rec.get("sha256") and rec["status"] in ("saved", "kept", "duplicate", "placeholder"):
                self.hash_urls[rec["sha256"]].add(key)
            if rec["status"] in ("saved", "kept") and rec.get("path"):
                ok = verified.get(rec["path"])
                if ok is None:
                    ok = verified[rec["path"]] = self._file_matches(self._abs(rec["path"]), rec.get("sha256"))
                if ok and rec["path"] not in claimed and rec.get("class", "") in self.class_dirs:
                    claimed.add(rec["path"])
                    self.hash_file[rec["sha256"]] = key
                    self.taken_names[(key[0], Path(rec["path"]).name.lower())] = key[1]
                    self.state[key] = rec
                else:
                    self.state[key] = None  # file gone or changed: download again
            else:
                self.state[key] = rec
        # Files an earlier run saved and then reclassified (it was killed between the record and the removal).
        for rel, hashes in ever_saved.items():
            if rel in claimed or not self._is_ours(rel):
                continue
            path = self._abs(rel)
            if any(self._file_matches(path, sha) for sha in hashes):  # never remove a file someone changed
                path.unlink(missing_ok=True)

    def _is_ours(self, rel: str) -> bool:
        return any(self._abs(rel).parent == d for d in self.class_dirs.values())

    @staticmethod
    def _file_matches(path: Path, sha: str | None) -> bool:
        try:
            data = path.read_bytes()
        except OSError:
            return False
        return sha is not None and hashlib.sha256(data).hexdigest() == sha

    def _clean_partials(self):
        for d in self.class_dirs.values():
            if d.is_dir():
                for p in d.glob(".*.part"):
                    p.unlink(missing_ok=True)

    # ---- what to do per item
    def _is_done(self, item) -> bool:
        key = (item.cls, item.url)
        rec = self.state.get(key)
        if rec is None:
            return False
        status = rec["status"]
        if status in ("saved", "kept"):
            return True
        if status == "duplicate":
            owner = self.hash_file.get(rec.get("sha256"))
            return owner is not None and owner != key
        return status not in TRANSIENT

    def _finish(self, item, status, **fields):
        rec = self._record((item.cls, item.url), status, **fields)
        self.counts[status] += 1
        self.per_class[item.cls][status] += 1
        return rec

    def _choose_name(self, item, ext) -> Path:
        folder = self.class_dirs[item.cls]
        candidates = [safe_name(item.url, ext, unique=item.name_unique), safe_name(item.url, ext, unique=True)]
        stem = candidates[-1][: -len(ext)] if ext else candidates[-1]
        candidates += [f"{stem}-{i}{ext}" for i in range(2, 100)]
        for name in candidates:
            owner = self.taken_names.get((item.cls, name.lower()))
            # A file we do not own (changed by someone, or not ours) is never overwritten.
            if owner is None and not (folder / name).exists() or owner == item.url:
                return _inside(folder, name)
        raise ValueError(f"no free file name for {item.url} in {folder}")

    def _write(self, path: Path, body: bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        with open(tmp, "wb") as fh:
            fh.write(body)
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        return tmp

    def _save(self, item, f: _Fetched):
        """Keep a validated body: as a new file, as a duplicate of one already saved, or not at all (placeholder)."""
        key = (item.cls, item.url)
        meta = dict(http_status=f.http_status, bytes=len(f.body), sha256=f.sha256, width=f.width, height=f.height,
                    format=f.format, content_type=f.content_type, final_url=f.final_url, elapsed_s=f.elapsed)
        self.hash_urls[f.sha256].add(key)
        if f.sha256 in self.placeholder_hashes or len(self.hash_urls[f.sha256]) >= self.placeholder_min_urls:
            self._finish(item, "placeholder", reason=self._placeholder_reason(f.sha256), **meta)
            self._mark_placeholder(f.sha256)
            return
        owner = self.hash_file.get(f.sha256)
        if owner is not None and owner != key:
            owner_rec = self.state[owner]
            owner_item = self._item_of.get(owner)
            if owner_item is not None and item.order < owner_item.order and owner_item.cls == item.cls:
                # Deterministic owner: the URL that comes first in the list keeps the file, whatever finished first.
                self._store(item, f, meta)
                self._demote_to_duplicate(owner, owner_rec, key)
            else:
                self._finish(item, "duplicate", reason=f"same content as {owner[1]}", path=owner_rec["path"], **meta)
            return
        if self.max_per_class is not None and self.saved_per_class[item.cls] >= self.max_per_class:
            self._finish(item, "skipped", reason=f"class already has {self.max_per_class} images", **meta)
            return
        self._store(item, f, meta)

    def _store(self, item, f, meta):
        path = self._choose_name(item, _FORMAT_EXT.get(f.format, ".img"))
        tmp = self._write(path, f.body)
        # The record goes first: if we are killed before the rename, the rerun sees a missing file and downloads again.
        self._finish(item, "saved", path=self._rel(path), **meta)
        os.replace(tmp, path)
        self.hash_file[f.sha256] = (item.cls, item.url)
        self.taken_names[(item.cls, path.name.lower())] = item.url
        self.saved_per_class[item.cls] += 1

    def _uncount(self, key, status):
        self.counts[status] -= 1
        self.per_class[key[0]][status] -= 1
        if self.counts[status] <= 0:
            del self.counts[status]
        if self.per_class[key[0]][status] <= 0:
            del self.per_class[key[0]][status]

    def _reclassify(self, key, rec, status, **extra):
        """Re-record ``key`` as ``status`` (keeping what its download found), remove the file it had saved, and move
        it between the counts."""
        old_status = rec["status"]
        fields = {k: v for k, v in rec.items() if k not in ("url", "class", "status", "time", "path", "reason")}
        self._record(key, status, **fields, **extra)
        if old_status in ("saved", "kept") and rec.get("path"):
            self._abs(rec["path"]).unlink(missing_ok=True)
            self.taken_names.pop((key[0], Path(rec["path"]).name.lower()), None)
            self.saved_per_class[key[0]] -= 1
        if key in self._counted:
            self._uncount(key, old_status)
            self.counts[status] += 1
            self.per_class[key[0]][status] += 1

    def _demote_to_duplicate(self, owner, owner_rec, new_owner):
        """``owner`` lost its file to an earlier URL with the same content."""
        self._reclassify(owner, owner_rec, "duplicate", reason=f"same content as {new_owner[1]}",
                         path=self.state[new_owner]["path"])

    def _placeholder_reason(self, sha):
        return (f"identical content served for {len(self.hash_urls[sha])} URLs "
                f"(threshold {self.placeholder_min_urls}): a placeholder, not a photo")

    def _mark_placeholder(self, sha):
        """Reclassify every URL that served ``sha`` (this run or earlier) as a placeholder and remove its file."""
        self.placeholder_hashes.add(sha)
        reason = self._placeholder_reason(sha)
        for key in sorted(self.hash_urls[sha]):
            rec = self.state.get(key)
            if rec is not None and rec["status"] != "placeholder":
                self._reclassify(key, rec, "placeholder", reason=reason)
        self.hash_file.pop(sha, None)

    # ---- main loop
    def run(self) -> DownloadSummary:
        from .progress import bar as progress_bar

        start = time.monotonic()
        self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        self._clean_partials()
        self._load_previous()
        self._item_of = {(it.cls, it.url): it for it in self.items}
        self._counted = set()
        self._mf = open(self.manifest_path, "a", encoding="utf-8")
        interrupted = False
        bar = progress_bar(total=len(self.items), unit="url", progress=self.progress,
                   desc="download")
        try:
            # Placeholders already evident from earlier runs.
            for sha, keys in list(self.hash_urls.items()):
                if len(keys) >= self.placeholder_min_urls:
                    self._mark_placeholder(sha)
            for key, rec in self.state.items():
                if rec is not None and rec["status"] in ("saved", "kept") and key[0] in self.class_dirs:
                    self.saved_per_class[key[0]] += 1
            pending = collections.defaultdict(collections.deque)  # host -> items
            for item in self.items:
                key = (item.cls, item.url)
                if self._is_done(item):
                    rec = self.state[key]
                    status = rec["status"]
                    if status in ("saved", "kept"):
                        status = "kept"
                        if rec["status"] != "kept":
                            rec = dict(rec, status="kept")
                            self.state[key] = rec
                    self.counts[status] += 1
                    self.per_class[item.cls][status] += 1
                    self._counted.add(key)
                    bar.update(1)
                elif item.host == "":
                    self._finish(item, "invalid_url", reason=_check_url(item.url) or "invalid URL")
                    self._counted.add(key)
                    bar.update(1)
                else:
                    pending[item.host].append(item)
            if pending and self.resolve_first and not urllib.request.getproxies():
                bar.set_description_str("resolving hosts")
                for host, error in _resolve_hosts(list(pending)).items():
                    self.dead_hosts.add(host)
                    for item in pending.pop(host):
                        self._finish(item, "unreachable", reason=f"host name does not resolve ({error})"[:300])
                        self._counted.add((item.cls, item.url))
                        bar.update(1)
                bar.set_description_str("download")
            self._loop(pending, bar)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            self._mf.close()
            if interrupted:
                self._clean_partials()
        files = sorted(self._abs(rec["path"]) for key, rec in self.state.items()
                       if rec is not None and rec["status"] in ("saved", "kept") and key in self._item_of)
        not_attempted = len(self.items) - len(self._counted)
        counts = dict(self.counts)
        if not_attempted:
            counts["not_attempted"] = not_attempted
        summary = DownloadSummary(counts=counts, per_class={c: dict(v) for c, v in self.per_class.items()},
                                  manifest=self.manifest_path, out_dir=self.root,
                                  elapsed_s=round(time.monotonic() - start, 2), total=len(self.items),
                                  files=files, interrupted=interrupted)
        if interrupted:
            raise _Interrupted(summary)
        return summary

    def _class_full(self, cls) -> bool:
        return self.max_per_class is not None and self.saved_per_class[cls] >= self.max_per_class

    def _loop(self, pending, bar):
        """Dispatch round-robin over hosts (at most ``per_host`` each, ``workers`` in all) until nothing is left.

        Items of a class that already has ``max_per_class`` images wait in ``deferred``; they are dispatched again
        only if files are later removed (placeholders found), otherwise they stay unattempted.
        """
        in_flight = {}  # future -> item
        host_busy = collections.Counter()
        deferred = collections.defaultdict(list)  # cls -> items not attempted because the class was full
        pool = cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vggtransfer-download")
        try:
            while True:
                for cls in [c for c in deferred if not self._class_full(c)]:
                    for item in deferred.pop(cls):
                        pending[item.host].append(item)
                progressed = True
                while progressed and len(in_flight) < self.workers:
                    progressed = False
                    for host in list(pending):
                        queue = pending[host]
                        if host in self.dead_hosts:
                            while queue:
                                item = queue.popleft()
                                self._finish(item, "unreachable", reason=f"not tried: host {host} marked dead after "
                                             f"{self.host_failures[host]} failed connection(s)")
                                self._counted.add((item.cls, item.url))
                                bar.update(1)
                        while queue and self._class_full(queue[0].cls):
                            item = queue.popleft()
                            deferred[item.cls].append(item)
                        if not queue:
                            del pending[host]
                            continue
                        # One request at a time to a host until it has answered once: a dead host costs little.
                        limit = self.per_host if host in self.host_ok else 1
                        if host_busy[host] >= limit or len(in_flight) >= self.workers:
                            continue
                        item = queue.popleft()
                        fut = pool.submit(_fetch, self.session, item.url, self.timeout, self.max_bytes,
                                          self.max_pixels, self.min_side, self.min_bytes)
                        in_flight[fut] = item
                        host_busy[host] += 1
                        progressed = True
                if not in_flight:
                    if pending or any(not self._class_full(c) for c in deferred):
                        continue
                    break
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    item = in_flight.pop(fut)
                    host_busy[item.host] -= 1
                    self._handle(item, fut)
                    self._counted.add((item.cls, item.url))
                    bar.update(1)
                    bar.set_postfix_str(f"saved {sum(self.saved_per_class.values())}", refresh=False)
        finally:
            pool.shutdown(wait=not in_flight, cancel_futures=True)

    def _handle(self, item, fut):
        try:
            f = fut.result()
        except Exception as exc:  # a bug or an exotic failure must not stop the whole run
            self._finish(item, "error", reason=f"{type(exc).__name__}: {exc}"[:300])
            return
        if f.connect_failure:
            self.host_failures[item.host] += 1
            # A name that did not resolve (after urllib3's retries) will not resolve for the next URL either.
            if f.dns_failure or (self.host_failure_limit and self.host_failures[item.host] >= self.host_failure_limit):
                if item.host not in self.host_ok:
                    self.dead_hosts.add(item.host)
        elif f.http_status is not None:
            self.host_failures[item.host] = 0
            self.host_ok.add(item.host)
        meta = dict(http_status=f.http_status, sha256=f.sha256, width=f.width, height=f.height, format=f.format,
                    content_type=f.content_type, final_url=f.final_url, elapsed_s=f.elapsed)
        if f.status == "ok":
            try:
                self._save(item, f)
            except OSError as exc:
                self._finish(item, "error", reason=f"could not write the file: {exc}"[:300], **meta)
            return
        if f.status == "placeholder" and f.sha256:
            self.hash_urls[f.sha256].add((item.cls, item.url))
        self._finish(item, f.status, reason=f.reason, **meta)


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

    failed = {}
    if not names:
        return failed
    with cf.ThreadPoolExecutor(max_workers=min(threads, len(names)), thread_name_prefix="vggtransfer-dns") as pool:
        for host, error in pool.map(look, names.items()):
            if error:
                failed[host] = error
    return failed


class _Interrupted(KeyboardInterrupt):
    def __init__(self, summary):
        super().__init__("download interrupted")
        self.summary = summary


def _host_of(url: str) -> str:
    if _check_url(url):
        return ""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname.lower()}:{parts.port or (443 if parts.scheme.lower() == 'https' else 80)}"


def _make_items(class_urls: Mapping[str, Iterable[str]]):
    items, order = [], 0
    for cls, urls in class_urls.items():
        seen = set()
        names = collections.Counter()
        cls_items = []
        for url in urls:
            if url in seen:
                continue
            seen.add(url)
            cls_items.append(_Item(cls, url, order, _host_of(url)))
            names[_url_stem(url).lower()] += 1
            order += 1
        for it in cls_items:
            it.name_unique = names[_url_stem(it.url).lower()] > 1
        items.extend(cls_items)
    return items


def _run(class_urls, class_dirs, root, *, manifest=None, session=None, workers=16, per_host=4, timeout=(5, 20),
         max_bytes=DEFAULT_MAX_BYTES, max_pixels=MAX_PIXELS, max_per_class=None, placeholder_min_urls=3,
         min_side=MIN_SIDE, min_bytes=1024, host_failure_limit=3, retries=2, backoff=0.25, progress=True,
         fsync=False, resolve_first=True) -> DownloadSummary:
    if max_per_class is not None and max_per_class < 0:
        raise ValueError(f"max_per_class must be >= 0, got {max_per_class}")
    if workers < 1 or per_host < 1:
        raise ValueError("workers and per_host must be at least 1")
    root = Path(root)
    own_session = session is None
    if own_session:
        session = make_session(workers=workers, retries=retries, backoff=backoff)
    try:
        engine = _Run(_make_items(class_urls), class_dirs, root, Path(manifest) if manifest else root / MANIFEST_NAME,
                      session=session, workers=workers, per_host=per_host, timeout=timeout, max_bytes=max_bytes,
                      max_pixels=max_pixels, max_per_class=max_per_class, placeholder_min_urls=placeholder_min_urls,
                      min_side=min_side, min_bytes=min_bytes, host_failure_limit=host_failure_limit,
                      progress=progress, fsync=fsync, resolve_first=resolve_first)
        return engine.run()
    finally:
        if own_session:
            session.close()


def download_images(urls: Iterable[str], out_dir, *, workers: int = 16, per_host: int = 4, timeout=(5, 20),
                    max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = MAX_PIXELS, max_images: int | None = None,
                    manifest=None, progress: bool = True, session: requests.Session | None = None,
                    **options) -> DownloadSummary:
    """Download ``urls`` into ``out_dir``; returns a :class:`DownloadSummary`. Safe to rerun: it continues.

    ``timeout`` is ``(connect, read)`` seconds. ``max_images`` stops once that many valid images are in ``out_dir``.
    The manifest (default ``out_dir/manifest.jsonl``) gets one JSON line per outcome. Further keyword options:
    ``placeholder_min_urls`` (3), ``min_side`` (32 px), ``min_bytes`` (1024), ``host_failure_limit`` (3),
    ``retries`` (2), ``backoff`` (0.25 s), ``fsync`` (False), ``resolve_first`` (True: look up every host name once,
    in parallel, before downloading; names that do not resolve make their URLs ``unreachable`` without a request). Ctrl-C raises ``KeyboardInterrupt`` after cleaning up.
    """
    out_dir = Path(out_dir)
    return _run({"": list(urls)}, {"": out_dir}, out_dir, manifest=manifest, session=session, workers=workers,
                per_host=per_host, timeout=timeout, max_bytes=max_bytes, max_pixels=max_pixels,
                max_per_class=max_images, progress=progress, **options)


def download_url_lists(lists: Mapping[str, object], out_root, *, max_per_class: int | None = None,
                       **kwargs) -> DownloadSummary:
    """Download several classes: ``{class_name: url_list_file or list of URLs}`` into ``out_root/<class_name>/``.

    One pool serves all classes; one manifest (``out_root/manifest.jsonl``) records every URL with its class.
    Lines of a list file that are not URLs are left out and counted in ``invalid_lines``. Other keywords as in
    :func:`download_images`.
    """
    out_root = Path(out_root)
    class_urls, invalid = {}, []
    for cls, source in lists.items():
        _check_class_name(cls)
        if isinstance(source, (str, os.PathLike)):
            urls = read_url_list(source)
            invalid.extend((cls, f"{Path(source).name}:{ln}: {text}", why) for ln, text, why in urls.invalid)
            class_urls[cls] = list(urls)
        else:
            class_urls[cls] = list(source)
    summary = _run(class_urls, {c: out_root / c for c in class_urls}, out_root, max_per_class=max_per_class,
                   **kwargs)
    summary.invalid_lines = len(invalid)
    return summary


def _check_class_name(cls: str):
    if not cls or cls in (".", "..") or "/" in cls or "\\" in cls or "\0" in cls or cls.startswith("."):
        raise ValueError(f"unusable class name {cls!r} (it becomes a folder name)")

"""URL lists and the file names their images get: reading and checking a list, safe and unique names inside
the output folder, host names."""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
import urllib.parse
import urllib.request
from pathlib import Path

_FORMAT_EXT = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "WEBP": ".webp",
    "MPO": ".jpg",
    "ICO": ".ico",
    "PPM": ".ppm",
}
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


def _host_of(url: str) -> str:
    if _check_url(url):
        return ""
    parts = urllib.parse.urlsplit(url)
    return f"{(parts.hostname or '').lower()}:{parts.port or (443 if parts.scheme.lower() == 'https' else 80)}"

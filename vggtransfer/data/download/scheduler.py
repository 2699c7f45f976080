"""The download run: its options (:class:`DownloadOptions`), the scheduler that keeps ``workers`` requests in
flight with at most ``per_host`` per host, the bookkeeping of names, duplicates and placeholders, and the public
entry points :func:`download_images` and :func:`download_url_lists`.

The run class is over 400 lines: its bookkeeping (manifest records, counts per class, duplicate and placeholder
reclassification) shares one state that a split would only pass back and forth."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import time
import typing
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

import requests

from vggtransfer.data.download.fetch import DEFAULT_MAX_BYTES, _fetch, _Fetched, _resolve_hosts, make_session
from vggtransfer.data.download.manifest import MANIFEST_NAME, TRANSIENT, DownloadSummary, _all_manifest_records
from vggtransfer.data.download.urls import (
    _FORMAT_EXT,
    _check_url,
    _host_of,
    _inside,
    _url_stem,
    read_url_list,
    safe_name,
)
from vggtransfer.data.images import MAX_PIXELS
from vggtransfer.nets.cfg import MIN_INPUT_SIDE


# ----------------------------------------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class DownloadOptions:
    """Every setting of a download run, in one place (see :func:`download_images` for their meaning)."""

    workers: int = 16
    per_host: int = 4
    timeout: tuple = (5, 20)
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = MAX_PIXELS
    max_per_class: int | None = None
    placeholder_min_urls: int = 3
    min_side: int = MIN_INPUT_SIDE
    min_bytes: int = 1024
    host_failure_limit: int = 3
    retries: int = 2
    backoff: float = 0.25
    progress: bool = True
    fsync: bool = False
    resolve_first: bool = True

    def __post_init__(self):
        if self.max_per_class is not None and self.max_per_class < 0:
            raise ValueError(f"max_per_class must be >= 0, got {self.max_per_class}")
        if self.workers < 1 or self.per_host < 1:
            raise ValueError("workers and per_host must be at least 1")


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

    def __init__(
        self, items, class_dirs: Mapping[str, Path], root: Path, manifest: Path, session, opt: DownloadOptions
    ):
        self.items = items
        self.class_dirs = {c: Path(d) for c, d in class_dirs.items()}
        self.root = Path(root)
        self.manifest_path = Path(manifest)
        self.session = session
        self.opt = opt
        self.counts: collections.Counter = collections.Counter()
        self.per_class: dict = {c: collections.Counter() for c in self.class_dirs}
        self.state: dict = {}  # (cls, url) -> current record (from manifest or this run)
        self.hash_urls: collections.defaultdict = collections.defaultdict(
            set
        )  # sha256 -> {(cls, url)} that served it (any run)
        self.hash_file: dict = {}  # sha256 -> (cls, url) of the saved owner
        self.placeholder_hashes: set = set()
        self.taken_names: dict = {}  # (cls, lower-case name) -> url
        self.host_failures: collections.Counter = collections.Counter()
        self.dead_hosts: set = set()
        self.host_ok: set = set()  # hosts that have answered with an HTTP status in this run
        self.saved_per_class: collections.Counter = collections.Counter()
        self._mf: typing.TextIO | None = None

    # ---- manifest
    def _rel(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix()

    def _abs(self, rel: str) -> Path:
        return self.root / rel

    def _record(self, item_key, status, **fields):
        rec = {"url": item_key[1], "class": item_key[0], "status": status}
        rec.update({k: v for k, v in fields.items() if v is not None and v != ""})
        rec["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        assert self._mf is not None, "the manifest is open while the run lasts"
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
            if self.opt.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        return tmp

    def _save(self, item, f: _Fetched):
        """Keep a validated body: as a new file, as a duplicate of one already saved, or not at all (placeholder)."""
        key = (item.cls, item.url)
        meta = dict(
            http_status=f.http_status,
            bytes=len(f.body or b""),
            sha256=f.sha256,
            width=f.width,
            height=f.height,
            format=f.format,
            content_type=f.content_type,
            final_url=f.final_url,
            elapsed_s=f.elapsed,
        )
        self.hash_urls[f.sha256].add(key)
        if f.sha256 in self.placeholder_hashes or len(self.hash_urls[f.sha256]) >= self.opt.placeholder_min_urls:
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
        if self.opt.max_per_class is not None and self.saved_per_class[item.cls] >= self.opt.max_per_class:
            self._finish(item, "skipped", reason=f"class already has {self.opt.max_per_class} images", **meta)
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
        self._reclassify(
            owner, owner_rec, "duplicate", reason=f"same content as {new_owner[1]}", path=self.state[new_owner]["path"]
        )

    def _placeholder_reason(self, sha):
        return (
            f"identical content served for {len(self.hash_urls[sha])} URLs "
            f"(threshold {self.opt.placeholder_min_urls}): a placeholder, not a photo"
        )

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
        from vggtransfer.core.progress import bar as progress_bar

        start = time.monotonic()
        self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        self._clean_partials()
        self._load_previous()
        self._item_of = {(it.cls, it.url): it for it in self.items}
        self._counted = set()
        self._mf = open(self.manifest_path, "a", encoding="utf-8")
        interrupted = False
        bar = progress_bar(total=len(self.items), unit="url", progress=self.opt.progress, desc="download")
        try:
            # Placeholders already evident from earlier runs.
            for sha, keys in list(self.hash_urls.items()):
                if len(keys) >= self.opt.placeholder_min_urls:
                    self._mark_placeholder(sha)
            for key, rec in self.state.items():
                if rec is not None and rec["status"] in ("saved", "kept") and key[0] in self.class_dirs:
                    self.saved_per_class[key[0]] += 1
            pending: collections.defaultdict = collections.defaultdict(collections.deque)  # host -> items
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
            if pending and self.opt.resolve_first and not urllib.request.getproxies():
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
            if self._mf is not None:
                self._mf.close()
            if interrupted:
                self._clean_partials()
        files = sorted(
            self._abs(rec["path"])
            for key, rec in self.state.items()
            if rec is not None and rec["status"] in ("saved", "kept") and key in self._item_of
        )
        not_attempted = len(self.items) - len(self._counted)
        counts = dict(self.counts)
        if not_attempted:
            counts["not_attempted"] = not_attempted
        summary = DownloadSummary(
            counts=counts,
            per_class={c: dict(v) for c, v in self.per_class.items()},
            manifest=self.manifest_path,
            out_dir=self.root,
            elapsed_s=round(time.monotonic() - start, 2),
            total=len(self.items),
            files=files,
            interrupted=interrupted,
        )
        if interrupted:
            raise _Interrupted(summary)
        return summary

    def _class_full(self, cls) -> bool:
        return self.opt.max_per_class is not None and self.saved_per_class[cls] >= self.opt.max_per_class

    def _loop(self, pending, bar):
        """Dispatch round-robin over hosts (at most ``per_host`` each, ``workers`` in all) until nothing is left.

        Items of a class that already has ``max_per_class`` images wait in ``deferred``; they are dispatched again
        only if files are later removed (placeholders found), otherwise they stay unattempted.
        """
        in_flight = {}  # future -> item
        host_busy = collections.Counter()
        deferred = collections.defaultdict(list)  # cls -> items not attempted because the class was full
        pool = cf.ThreadPoolExecutor(max_workers=self.opt.workers, thread_name_prefix="vggtransfer-download")
        try:
            while True:
                for cls in [c for c in deferred if not self._class_full(c)]:
                    for item in deferred.pop(cls):
                        pending[item.host].append(item)
                progressed = True
                while progressed and len(in_flight) < self.opt.workers:
                    progressed = False
                    for host in list(pending):
                        queue = pending[host]
                        if host in self.dead_hosts:
                            while queue:
                                item = queue.popleft()
                                self._finish(
                                    item,
                                    "unreachable",
                                    reason=f"not tried: host {host} marked dead after "
                                    f"{self.host_failures[host]} failed connection(s)",
                                )
                                self._counted.add((item.cls, item.url))
                                bar.update(1)
                        while queue and self._class_full(queue[0].cls):
                            item = queue.popleft()
                            deferred[item.cls].append(item)
                        if not queue:
                            del pending[host]
                            continue
                        # One request at a time to a host until it has answered once: a dead host costs little.
                        limit = self.opt.per_host if host in self.host_ok else 1
                        if host_busy[host] >= limit or len(in_flight) >= self.opt.workers:
                            continue
                        item = queue.popleft()
                        fut = pool.submit(
                            _fetch,
                            self.session,
                            item.url,
                            self.opt.timeout,
                            self.opt.max_bytes,
                            self.opt.max_pixels,
                            self.opt.min_side,
                            self.opt.min_bytes,
                        )
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
            if f.dns_failure or (
                self.opt.host_failure_limit and self.host_failures[item.host] >= self.opt.host_failure_limit
            ):
                if item.host not in self.host_ok:
                    self.dead_hosts.add(item.host)
        elif f.http_status is not None:
            self.host_failures[item.host] = 0
            self.host_ok.add(item.host)
        meta = dict(
            http_status=f.http_status,
            sha256=f.sha256,
            width=f.width,
            height=f.height,
            format=f.format,
            content_type=f.content_type,
            final_url=f.final_url,
            elapsed_s=f.elapsed,
        )
        if f.status == "ok":
            try:
                self._save(item, f)
            except OSError as exc:
                self._finish(item, "error", reason=f"could not write the file: {exc}"[:300], **meta)
            return
        if f.status == "placeholder" and f.sha256:
            self.hash_urls[f.sha256].add((item.cls, item.url))
        self._finish(item, f.status, reason=f.reason, **meta)


class _Interrupted(KeyboardInterrupt):
    def __init__(self, summary):
        super().__init__("download interrupted")
        self.summary = summary


def _make_items(class_urls: Mapping[str, Iterable[str]]):
    items, order = [], 0
    for cls, urls in class_urls.items():
        seen = set()
        names: collections.Counter = collections.Counter()
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


def _run(class_urls, class_dirs, root, opt: DownloadOptions, *, manifest=None, session=None) -> DownloadSummary:
    root = Path(root)
    own_session = session is None
    if own_session:
        session = make_session(workers=opt.workers, retries=opt.retries, backoff=opt.backoff)
    try:
        engine = _Run(
            _make_items(class_urls),
            class_dirs,
            root,
            Path(manifest) if manifest else root / MANIFEST_NAME,
            session,
            opt,
        )
        return engine.run()
    finally:
        if own_session:
            session.close()


def download_images(
    urls: Iterable[str],
    out_dir,
    *,
    workers: int = 16,
    per_host: int = 4,
    timeout=(5, 20),
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_images: int | None = None,
    manifest=None,
    progress: bool = True,
    session: requests.Session | None = None,
    **options,
) -> DownloadSummary:
    """Download ``urls`` into ``out_dir``; returns a :class:`DownloadSummary`. Safe to rerun: it continues.

    ``timeout`` is ``(connect, read)`` seconds. ``max_images`` stops once that many valid images are in ``out_dir``.
    The manifest (default ``out_dir/manifest.jsonl``) gets one JSON line per outcome. Further keyword options:
    ``placeholder_min_urls`` (3), ``min_side`` (32 px), ``min_bytes`` (1024), ``host_failure_limit`` (3),
    ``retries`` (2), ``backoff`` (0.25 s), ``fsync`` (False), ``resolve_first`` (True: look up every host name once,
    in parallel, before downloading; names that do not resolve make their URLs ``unreachable`` without a request). Ctrl-C raises ``KeyboardInterrupt`` after cleaning up.
    """
    if isinstance(urls, (str, bytes)):  # one URL, never its characters
        urls = [urls.decode() if isinstance(urls, bytes) else urls]
    out_dir = _check_out_dir(out_dir)
    opt = _options(
        workers=workers,
        per_host=per_host,
        timeout=timeout,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_per_class=max_images,
        progress=progress,
        **options,
    )
    return _run({"": list(urls)}, {"": out_dir}, out_dir, opt, manifest=manifest, session=session)


def download_url_lists(
    lists: Mapping[str, object],
    out_root,
    *,
    max_per_class: int | None = None,
    manifest=None,
    session: requests.Session | None = None,
    **options,
) -> DownloadSummary:
    """Download several classes: ``{class_name: url_list_file or list of URLs}`` into ``out_root/<class_name>/``.

    One pool serves all classes; one manifest (``out_root/manifest.jsonl``) records every URL with its class.
    Lines of a list file that are not URLs are left out and counted in ``invalid_lines``. Other keywords as in
    :func:`download_images`.
    """
    out_root = _check_out_dir(out_root)
    class_urls: dict = {}
    invalid: list = []
    for cls, source in lists.items():
        _check_class_name(cls)
        if isinstance(source, (str, os.PathLike)):
            urls = read_url_list(source)
            invalid.extend((cls, f"{Path(source).name}:{ln}: {text}", why) for ln, text, why in urls.invalid)
            class_urls[cls] = list(urls)
        else:
            class_urls[cls] = list(source)  # type: ignore[call-overload]  # an iterable of URLs
    opt = _options(max_per_class=max_per_class, **options)
    summary = _run(class_urls, {c: out_root / c for c in class_urls}, out_root, opt, manifest=manifest, session=session)
    summary.invalid_lines = len(invalid)
    return summary


def _options(**options) -> DownloadOptions:
    """:class:`DownloadOptions` from keywords; an unknown one is a TypeError naming it and the known ones."""
    known = [f.name for f in dataclasses.fields(DownloadOptions)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown download option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return DownloadOptions(**options)


def _check_out_dir(path) -> Path:
    """The folder images go into: a new path or a folder; an existing file is a ValueError naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a folder; expected a folder to download into")
    return path


def _check_class_name(cls: str):
    if not cls or cls in (".", "..") or "/" in cls or "\\" in cls or "\0" in cls or cls.startswith("."):
        raise ValueError(f"unusable class name {cls!r} (it becomes a folder name)")

"""An HDF5 feature store: the frozen features of a whole data set, computed once, resumable, never silently stale.

Layout of ``features.h5``::

    features  (n, dim) float32, chunked      one row per item, in data set order
    labels    (n,) int64 or float64           class index (classification) or target (regression)
    paths     (n,) str                        the item names (image paths, or file.h5:key[i])
    done      (n,) bool                       row computed (feature written, or the item failed)
    ok        (n,) bool                       row holds a feature (False: the item could not be read)
    error     (n,) str                        why a row failed
    attrs: config (JSON: weights sha256, arch, end point, pooling, image size, preprocessing, library version),
           label_names (JSON), task, items_sha256

Rows are written through a buffer of ``chunk_rows`` rows; after each chunk the ``done`` mask is written and the file
flushed (the default HDF5 file format: no write-status flag that would lock a file after a crash). A rerun after ``kill -9`` computes only
the rows whose ``done`` is False: nothing is recomputed, nothing is duplicated. Opening a store built with another
configuration raises :class:`FeatureStoreMismatch`, naming every key that differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggtransfer.core.progress import bar as progress_bar
from vggtransfer.data.datasets import Dataset, resize_arrays
from vggtransfer.data.images import ImageError

STORE_FORMAT = 1
#: Config keys that must match for a store to be reused (library_version is recorded but only its major.minor).
CHECKED_KEYS = (
    "arch",
    "weights_sha256",
    "end_point",
    "pooling",
    "image_size",
    "features",
    "preprocessing",
    "precision",
    "library_version",
)


#: Values of keys that stores written before the key existed hold implicitly.
_DEFAULTS = {"precision": "fp32"}
#: Fields of a block store's ``features`` spec added after stores were first written, with the value a store that
#: lacks them was made with: such a store still matches the same features requested today.
_FEATURE_DEFAULTS = {"mirror": False}


class FeatureStoreMismatch(ValueError):
    """The store on disk was made with another configuration (or other items) than the one requested."""

    def __init__(self, path, differences: dict):
        self.path, self.differences = str(path), differences
        lines = "; ".join(f"{k}: stored {s!r} vs requested {r!r}" for k, (s, r) in differences.items())
        super().__init__(
            f"{path}: feature store was built with a different configuration ({lines}); "
            "delete it or choose another --store path to rebuild"
        )


def items_digest(dataset: Dataset, absolute: bool = True) -> str:
    """A fingerprint of the items (paths and labels) a store was built for. Paths are made absolute first, so the
    same folder given as ``photos/`` or ``/home/me/photos`` is the same data set (``absolute=False``: the digest of
    stores written before that)."""
    h = hashlib.sha256()
    for p in dataset.paths:
        name = p if not absolute or ":" in Path(p).name else os.path.abspath(p)
        h.update(h5_text(name) + b"\0")
    h.update(np.ascontiguousarray(dataset.labels).tobytes())
    return h.hexdigest()


def h5_text(text: str) -> bytes:
    """A path or message as the store keeps it: UTF-8, with a file name's undecodable bytes (surrogate escapes)
    written back as they are on disk (h5py's own str encoding refuses them)."""
    return str(text).encode("utf-8", "surrogateescape")


def py_text(value) -> str:
    """Inverse of :func:`h5_text` for what h5py reads back (bytes, or str)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


class StoreInUse(ValueError):
    """A store another process has open for writing (HDF5's file lock)."""


def _h5_open(path: Path, mode: str, writing: bool = False):
    """``h5py.File(path, mode)`` with errors that name the file and say what was expected (``writing``: the store
    is about to be extracted into, so the advice is another path; else it is read, by ``train --store``)."""
    import h5py

    if path.is_dir():
        raise ValueError(f"{path}: is a folder; --store takes the path of an HDF5 file (e.g. features.h5)")
    try:
        return h5py.File(path, mode)
    except (OSError, ValueError) as exc:
        if "unable to lock file" in str(exc):  # HDF5's file lock: another process has it open for writing
            raise StoreInUse(
                f"{path}: in use by another process (an `extract` or `train` still writing it?); wait for it to "
                "finish, or stop it: a rerun then continues where it stopped"
            ) from None
        advice = (
            "choose another --store path (it is never overwritten)"
            if writing
            else "expected a feature store written by `vggtransfer extract`"
        )
        raise ValueError(f"{path}: exists but is not a readable HDF5 feature store ({exc}); {advice}") from None


def check_store_path(path) -> None:
    """Before any work: ``path`` can be written as a store (new, or an existing HDF5 file to resume). A folder or
    an existing file that is not HDF5 raises ``ValueError`` naming it; such a file is never overwritten."""
    path = Path(path)
    if path.exists():
        with _h5_open(path, "r", writing=True):
            pass


def compare_config(stored: dict, requested: dict) -> dict:
    """``{key: (stored, requested)}`` for each checked key that differs."""
    diff = {}
    for k in CHECKED_KEYS:
        if k not in requested and not (k == "features" and k in stored):
            continue
        s, r = stored.get(k, _DEFAULTS.get(k)), requested.get(k)
        if k == "features" and isinstance(s, dict) and isinstance(r, dict):
            s, r = {**_FEATURE_DEFAULTS, **s}, {**_FEATURE_DEFAULTS, **r}
        if k == "library_version":
            s = ".".join(str(s).split(".")[:2]) if s is not None else None
            r = ".".join(str(r).split(".")[:2])
        if s != r:
            diff[k] = (stored.get(k, _DEFAULTS.get(k)), requested.get(k))
    return diff


class StoreRows:
    """The feature rows of a store's readable items, read from the file when sliced (``rows[a:b]``, ``rows[indices]``)
    instead of loaded at once: what :func:`open_store` gives with ``lazy=True``, for sets larger than memory.
    ``np.asarray(rows)`` reads them all."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, path, index, dim: int):
        self.path = Path(path)
        self.index = np.asarray(index, np.int64)  # the readable rows' positions in the file, increasing
        self.shape = (len(self.index), int(dim))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        import h5py

        rows = self.index[key]
        if rows.ndim != 1:
            raise IndexError(f"StoreRows takes a slice or a 1-D index array, got {key!r}")
        if not len(rows):
            return np.zeros((0, self.shape[1]), np.float32)
        with h5py.File(self.path, "r") as fh:
            data = fh["features"]
            if isinstance(key, slice) and np.all(np.diff(rows) > 0):  # one read of the span, bad rows dropped after
                span = data[rows[0] : rows[-1] + 1]
                return np.asarray(span[rows - rows[0]], np.float32)
            unique, inverse = np.unique(rows, return_inverse=True)  # h5py reads increasing indices
            return np.asarray(data[unique], np.float32)[inverse]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


@dataclass
class StoredFeatures:
    """The usable rows of a store: in memory, or read on demand (:class:`StoreRows`)."""

    features: np.ndarray | StoreRows
    labels: np.ndarray
    label_names: tuple
    paths: list
    config: dict
    errors: list  # (path, reason) of rows that failed

    @property
    def task(self) -> str:
        """'classification' when the store has label names, else 'regression'."""
        return "classification" if self.label_names else "regression"

    def __len__(self):
        return len(self.features)


def _read_attrs(fh) -> dict:
    return json.loads(fh.attrs["config"])


def open_store(path, config: dict | None = None, lazy: bool = False) -> StoredFeatures:
    """Load a complete store. With ``config`` (e.g. ``FeatureExtractor.config``), refuse a store that differs.
    ``lazy``: the features stay in the file (:class:`StoreRows`, read when sliced); labels and paths are loaded."""

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such feature store")
    with _h5_open(path, "r") as fh:
        for key in ("features", "labels", "paths", "done", "ok"):
            if key not in fh:
                raise ValueError(f"{path}: not a feature store (dataset {key!r} missing)")
        stored = _read_attrs(fh)
        if config is not None:
            diff = compare_config(stored, config)
            if diff:
                raise FeatureStoreMismatch(path, diff)
        done = fh["done"][()]
        if not done.all():
            raise ValueError(
                f"{path}: feature store is incomplete ({int(done.sum())}/{len(done)} rows); "
                "rerun `vggtransfer extract` to finish it"
            )
        ok = fh["ok"][()]
        idx = np.flatnonzero(ok)
        paths = [py_text(p) for p in fh["paths"][()]]
        errors = [py_text(e) for e in fh["error"][()]]
        dim = fh["features"].shape[1]
        if lazy:
            features: np.ndarray | StoreRows = StoreRows(path, idx, dim)
        else:
            features = fh["features"][()][idx] if len(idx) else np.zeros((0, dim), np.float32)
        return StoredFeatures(
            features,
            fh["labels"][()][idx],
            tuple(json.loads(fh.attrs["label_names"])),
            [paths[i] for i in idx],
            stored,
            [(paths[i], errors[i]) for i in np.flatnonzero(~ok)],
        )


def _create(path: Path, dataset: Dataset, config: dict, dim: int, chunk_rows: int, digest: str):
    import h5py

    tmp = path.with_name(path.name + ".creating")
    n = len(dataset)
    str_t = h5py.string_dtype()
    with h5py.File(tmp, "w") as fh:
        fh.create_dataset("features", (n, dim), np.float32, chunks=(max(1, min(chunk_rows, n)), dim))
        label_dtype = np.int64 if dataset.task == "classification" else np.float64
        fh.create_dataset("labels", data=dataset.labels.astype(label_dtype))
        fh.create_dataset("paths", data=np.array([h5_text(p) for p in dataset.paths], dtype=object), dtype=str_t)
        fh.create_dataset("done", (n,), bool, fillvalue=False)
        fh.create_dataset("ok", (n,), bool, fillvalue=False)
        fh.create_dataset("error", (n,), str_t)
        fh.attrs["config"] = json.dumps(config, sort_keys=True)
        fh.attrs["label_names"] = json.dumps(list(dataset.classes))
        fh.attrs["task"] = dataset.task
        fh.attrs["items_sha256"] = digest
        fh.attrs["store_format"] = STORE_FORMAT
    tmp.replace(path)  # the store appears complete with its metadata, or not at all


class BufferedRowWriter:
    """Collects rows in memory and writes them ``chunk_rows`` at a time, then marks them done and flushes."""

    def __init__(self, fh, chunk_rows: int):
        self.fh, self.chunk_rows = fh, chunk_rows
        self.rows: list = []
        self.feats: list = []
        self.errors: list = []
        self.written = 0

    def add(self, row: int, feature=None, error: str | None = None):
        """Buffer one row: its feature, or ``error`` for an item that failed; writes when the buffer is full."""
        self.rows.append(row)
        self.feats.append(feature)
        self.errors.append(error)
        if len(self.rows) >= self.chunk_rows:
            self.flush()

    def flush(self):
        """Write the buffered rows, then mark them done and flush the file."""
        if not self.rows:
            return
        order = np.argsort(self.rows)
        rows = np.asarray(self.rows)[order]
        feats = [self.feats[i] for i in order]
        errors = [self.errors[i] for i in order]
        good = [i for i, f in enumerate(feats) if f is not None]
        if good:
            self.fh["features"][rows[good]] = np.stack([feats[i] for i in good])
        ok = self.fh["ok"]
        err = self.fh["error"]
        ok[rows] = np.array([f is not None for f in feats])
        for r, e in zip(rows, errors):
            if e is not None:
                err[r] = h5_text(e)
        for name in ("features", "ok", "error"):
            self.fh[name].flush()
        # `done` last: a row counts only once its feature is on disk.
        self.fh["done"][rows] = True
        self.fh["done"].flush()
        self.fh.flush()
        self.written += len(rows)
        self.rows, self.feats, self.errors = [], [], []


def build_store(
    path,
    dataset: Dataset,
    extractor,
    chunk_rows: int = 256,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> Path:
    """Extract the features of ``dataset`` with ``extractor`` into the HDF5 store ``path`` (resuming if present).

    Returns the path. Refuses (:class:`FeatureStoreMismatch`) a store with another configuration or other items.
    ``stop_after`` (rows) stops early, for tests of resuming.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = dict(extractor.config)
    digest = items_digest(dataset)
    if path.exists():
        with _h5_open(path, "r", writing=True) as fh:
            for key in ("features", "done", "paths"):
                if key not in fh or "config" not in fh.attrs:
                    raise ValueError(
                        f"{path}: an HDF5 file but not a feature store (no {key!r}); choose another "
                        "--store path (it is never overwritten)"
                    )
            stored = _read_attrs(fh)
            diff = compare_config(stored, config)
            if fh.attrs.get("items_sha256") not in (digest, items_digest(dataset, absolute=False)):
                diff["items"] = (
                    f"{len(fh['paths'])} items ({fh.attrs.get('items_sha256', '')[:12]}...)",
                    f"{len(dataset)} items ({digest[:12]}...)",
                )
            if diff:
                raise FeatureStoreMismatch(path, diff)
    else:
        _create(path, dataset, config, extractor.dim, chunk_rows, digest)

    with h5py.File(path, "r+") as fh:
        todo = np.flatnonzero(~fh["done"][()])
        if stop_after is not None:
            todo = todo[:stop_after]
        writer = BufferedRowWriter(fh, chunk_rows)
        with progress_bar(
            total=len(dataset),
            initial=len(dataset) - len(np.flatnonzero(~fh["done"][()])),
            desc=f"store {path.name}",
            unit="img",
            progress=progress,
        ) as bar:
            bs = extractor.batch_size
            if dataset.arrays is not None and hasattr(extractor, "iter_views"):  # block features: any image size
                rows_todo = [int(r) for r in todo]
                for feats, idx, errs in extractor.iter_views(
                    rows_todo, lambda r: extractor.views_of_array(dataset.arrays[r])
                ):
                    for i, f in zip(idx, feats):
                        writer.add(rows_todo[i], f)
                    bar.update(len(idx))
            elif dataset.arrays is not None:
                for s in range(0, len(todo), bs):
                    rows = todo[s : s + bs]
                    feats = extractor.extract_arrays(resize_arrays(dataset.arrays[rows], extractor.image_size))
                    for r, f in zip(rows, feats):
                        writer.add(int(r), f)
                    bar.update(len(rows))
            else:
                row_of = {dataset.paths[r]: int(r) for r in todo}
                for feats, idx, errs in extractor.iter_paths([dataset.paths[r] for r in todo]):
                    for i, f in zip(idx, feats):
                        writer.add(int(todo[i]), f)
                    for e in errs:
                        writer.add(row_of[str(e.path)], None, e.reason)
                    bar.update(len(idx) + len(errs))
            writer.flush()
    return path


def extract_resumable(
    path, dataset: Dataset, extractor, progress: bool | None = None, chunk_rows: int = 256, log=None
) -> tuple:
    """``(features, ok_indices, errors, resumed)`` of ``dataset``: the first three as ``extractor.extract_paths``
    returns them, computed through the store ``path`` so that a run that is killed continues where it stopped when
    called again with the same items and extractor (training's features: ``vggtransfer train --data``); ``resumed``
    counts the rows an earlier run had done. ``path`` is a cache of the caller's own: a store there for other items
    or features is replaced, and deleting it when done is the caller's. ``log`` (a callable) hears which."""
    path = Path(path)
    resumed = 0
    if path.exists():
        try:
            done, total = store_status(path)
            build_store(path, dataset, extractor, chunk_rows=chunk_rows, progress=False, stop_after=0)  # a check
            resumed = done
            if log:
                log(f"continuing the features of an earlier run: {done} of {total} images done ({path})")
        except StoreInUse:  # another run of the same command: never pull its file away
            raise
        except (FeatureStoreMismatch, ValueError, OSError, KeyError):
            path.unlink()
            if log:
                log(f"{path}: an earlier run's features, of other images or settings: extracting again")
    build_store(path, dataset, extractor, chunk_rows=chunk_rows, progress=progress)
    stored = open_store(path, lazy=True)
    rows = stored.features
    assert isinstance(rows, StoreRows)  # lazy: the readable rows, read from the file when sliced
    feats = np.empty(rows.shape, np.float32)
    for start in range(0, len(rows), chunk_rows):  # chunk by chunk: never the failed rows' space too
        feats[start : start + chunk_rows] = rows[start : start + chunk_rows]
    errors = [ImageError(item, reason) for item, reason in stored.errors]
    idx = rows.index
    return feats, idx.tolist(), errors, resumed


def store_status(path) -> tuple:
    """``(rows done, rows total)`` of a store on disk."""
    with _h5_open(Path(path), "r") as fh:
        done = fh["done"][()]
    return int(done.sum()), len(done)

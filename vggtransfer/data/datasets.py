"""Labelled image data sets for the recipes: a folder of class folders, a SIGNS-style h5 file, or a CSV.

Every loader returns a :class:`Dataset`: items that are image paths or in-memory uint8 images (the h5 arrays), one
label index (classification) or target (regression) per item, the class names, and the items that could not be
used, each with its name and the reason (:attr:`Dataset.bad`). A data set with no usable item raises
:class:`DatasetError`. Splits are seeded and stratified by class (:func:`vggtransfer.models.transfer.split_indices`).

The module is over 400 lines because the one :class:`Dataset` type, its checks, and the loaders of the three input
kinds that ``--data`` accepts (with :func:`from_path` choosing among them) read the same labels the same way; each
loader names bad items in one convention, which a split into modules would scatter.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vggtransfer.core.progress import bar
from vggtransfer.data.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    check_array_images,
    check_image,
    files_under,
    prepare_array,
)
from vggtransfer.data.splits import balanced_class_weights, split_indices


class DatasetError(ValueError):
    """A data set that cannot be used at all (missing, wrong layout, or no usable item)."""


class MissingColumnError(DatasetError):
    """A CSV without the column its task reads. ``other_task`` is the task its columns suggest ('regression' where it
    has a ``target`` column instead of ``label``, 'classification' the other way round), else None: a caller can say
    what to do about it in its own terms (an option, a model's kind)."""

    def __init__(self, message: str, other_task: str | None = None):
        super().__init__(message)
        self.other_task = other_task


@dataclass
class BadItem:
    """An item left out of a data set: its name (path, CSV row, h5 index) and why."""

    name: str
    reason: str

    def __str__(self):
        return f"{self.name}: {self.reason}"


@dataclass
class Dataset:
    """Items + labels. ``paths`` are image files, or names like ``file.h5:train_set_x[3]`` when ``arrays`` holds the
    images themselves (uint8, (n, h, w, 3)). ``labels`` are class indices into ``classes`` (classification) or float
    targets (regression, ``classes`` empty)."""

    paths: list
    labels: np.ndarray
    classes: tuple = ()
    arrays: np.ndarray | None = None
    bad: list = field(default_factory=list)
    source: str = ""
    #: Things about the data set a user may not have meant that are not errors (e.g. a folder one level too high);
    #: the CLI prints each as ``note: ...`` before training.
    notes: list = field(default_factory=list)

    def __post_init__(self):
        self.paths = [str(p) for p in self.paths]
        self.labels = np.asarray(self.labels)
        self.classes = tuple(str(c) for c in self.classes)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} items but {len(self.labels)} labels")
        if self.arrays is not None and len(self.arrays) != len(self.paths):
            raise ValueError(f"{len(self.paths)} items but {len(self.arrays)} arrays")
        if not self.paths:
            reasons = "; ".join(str(b) for b in self.bad[:5])
            raise DatasetError(f"{self.source or 'data set'}: no usable item" + (f" ({reasons})" if reasons else ""))

    @property
    def task(self) -> str:
        """'classification' when the data set has classes, else 'regression'."""
        return "classification" if self.classes else "regression"

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index) -> "Dataset":
        """The items at ``index`` (in that order) as a new Dataset; ``bad``, ``source`` and ``notes`` are kept."""
        index = np.asarray(index, int)
        return Dataset(
            [self.paths[i] for i in index],
            self.labels[index],
            self.classes,
            None if self.arrays is None else self.arrays[index],
            list(self.bad),
            self.source,
            list(self.notes),
        )

    def split(self, val_fraction: float = 0.2, seed: int = 0):
        """Seeded ``(train, val)`` Datasets, stratified by class for classification."""
        strat = self.labels if self.task == "classification" else None
        tr, va = split_indices(len(self), val_fraction, seed, strat)
        return self.subset(tr), self.subset(va)

    def per_class(self, k: int, seed: int = 0) -> "Dataset":
        """At most ``k`` items of each class (seeded choice): a small real subset for tests and quick runs."""
        rng = np.random.default_rng(seed)
        keep: list = []
        for c in range(len(self.classes)):
            idx = np.flatnonzero(self.labels == c)
            keep.extend(rng.permutation(idx)[:k])
        return self.subset(np.sort(np.array(keep, int)))

    def check_every_class(self, min_items: int = 1) -> None:
        """Raise :class:`DatasetError` naming the data set when it has one class only, or a class has fewer than
        ``min_items`` items (none: a model cannot learn a class it never sees; auto's cross-validation needs 2).
        Checked before training pays for any feature."""
        if self.task != "classification":
            return
        where = self.source or "data set"
        if len(self.classes) < 2:
            raise DatasetError(
                f"{where}: one class only ({', '.join(self.classes)}); a classifier needs 2 or more (class folders "
                "DATA/<class>/<image>, or labels)"
            )
        counts = self.class_counts()
        absent = [c for c, n in zip(self.classes, counts) if n == 0]
        if absent:
            raise DatasetError(
                f"{where}: no training item of class(es) {', '.join(absent)} (of {len(self.classes)}: "
                f"{', '.join(self.classes[:10])}{', ...' if len(self.classes) > 10 else ''}); a model cannot learn a "
                "class it never sees"
            )
        few = [c for c, n in zip(self.classes, counts) if n < min_items]
        if few:
            raise DatasetError(
                f"{where}: class(es) {', '.join(few)} have fewer than {min_items} training items; cross-validation "
                f"needs {min_items} or more of every class"
            )

    def summary(self) -> str:
        """One line for people: how many items, and the classes with their counts (a range of counts where there are
        more than 8 classes) or the targets' range and mean: "245 images in 2 classes (ants: 124, bees: 121)"."""
        n = f"{len(self):,} image{'s' if len(self) != 1 else ''}"
        if self.task != "classification":
            y = self.labels.astype(float)
            return f"{n}, targets {y.min():g} to {y.max():g} (mean {y.mean():.4g})"
        counts = self.class_counts()
        if len(self.classes) <= 8:
            each = ", ".join(f"{c}: {k:,}" for c, k in zip(self.classes, counts))
        else:
            each = f"{counts.min():,} to {counts.max():,} per class"
        return f"{n} in {len(self.classes)} class{'' if len(self.classes) == 1 else 'es'} ({each})"

    def class_counts(self) -> np.ndarray:
        """Items per class, in class order."""
        return np.bincount(self.labels.astype(int), minlength=len(self.classes))

    def class_weights(self) -> np.ndarray:
        """'Balanced' weights n / (K * count_k): rare classes weigh more in the loss."""
        return balanced_class_weights(self.labels, len(self.classes))

    def fingerprints(self) -> np.ndarray:
        """Each item's :func:`fingerprints` (what ``evaluate`` compares with a model's training items)."""
        return fingerprints(self.paths if self.arrays is None else self.arrays)

    def copy_notes(self, prints=None) -> list:
        """Lines for people about items with the same bytes (``prints``: :meth:`fingerprints`, computed if not
        given): how many are copies of others, with an example, and how many of those carry another label or target
        than their twin (a photo cannot teach two classes: label noise, or a placeholder image filed under several
        classes). [] where every item is distinct."""
        first = first_copies(self.fingerprints() if prints is None else prints)
        groups: dict = {}
        for i, f in enumerate(first):
            if f != i:
                groups.setdefault(int(f), [int(f)]).append(i)
        same = [groups[k] for k in sorted(groups)]  # in the order of each group's first item
        if not same:
            return []

        def shown(i: int) -> str:
            label = self.classes[int(self.labels[i])] if self.classes else f"{float(self.labels[i]):g}"
            return f"{self.paths[i]} ({label})"

        copies = sum(len(g) - 1 for g in same)
        what = (
            "1 training item is a copy of another" if copies == 1 else f"{copies:,} training items are copies of others"
        )
        lines = [f"{what} (the same bytes), e.g. {' = '.join(map(shown, same[0][:2]))}"]
        mixed = [g for g in same if len({self.labels[i].item() for i in g}) > 1]
        if mixed:
            lines.append(
                f"{len(mixed):,} of those images {'carries' if len(mixed) == 1 else 'carry'} different "
                f"{'labels' if self.classes else 'targets'}, e.g. "
                f"{' = '.join(map(shown, mixed[0][:2]))}: one photo cannot teach both; relabel or remove the copies"
            )
        return lines

    def images(self, size: int) -> np.ndarray:
        """The in-memory images resized to ``size`` x ``size``, float32 RGB in [0, 1] (array data sets only)."""
        if self.arrays is None:
            raise ValueError("this data set holds image paths, not arrays")
        return resize_arrays(self.arrays, size)


#: Bytes of a :func:`fingerprints` digest (BLAKE2b-128: no two different files share one in practice).
FINGERPRINT_BYTES = 16


def fingerprints(items, workers: int = 8) -> np.ndarray:
    """BLAKE2b-128 digests (dtype ``S16``) of each item's bytes: an image file's content, or an in-memory image's
    shape and pixels; empty for a file that cannot be read. Identical files share a digest, whatever their names:
    a saved model keeps those of its training items, and ``evaluate`` names the test items among them. Files are
    read in ``workers`` threads (the reads wait on the disk, not the CPU)."""
    import concurrent.futures as cf
    import hashlib

    def digest(item) -> bytes:
        h = hashlib.blake2b(digest_size=FINGERPRINT_BYTES)
        if isinstance(item, np.ndarray):
            h.update(repr(item.shape).encode())
            h.update(np.ascontiguousarray(item).tobytes())
            return h.digest()
        try:
            with open(item, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            return b""
        return h.digest()

    items = list(items)
    with cf.ThreadPoolExecutor(max_workers=max(1, min(workers, len(items) or 1))) as pool:
        return np.array(list(pool.map(digest, items)), dtype=f"S{FINGERPRINT_BYTES}").reshape(len(items))


def first_copies(prints) -> np.ndarray:
    """For each item, the index of the first item with the same fingerprint: itself unless it is a copy (an item
    whose file could not be read, an empty fingerprint, is a copy of nothing)."""
    first: dict = {}
    return np.array([first.setdefault(fp, i) if fp else i for i, fp in enumerate(prints)], dtype=np.int64)


def resize_arrays(arrays, size: int) -> np.ndarray:
    """uint8 (n, h, w, 3) (or a sequence of (h, w, 3) of any sizes; checked up front) -> float32 (n, size, size, 3) in [0, 1]: the centre crop of image files
    (:func:`vggtransfer.data.images.prepare_array`, the one preprocessing path)."""
    arrays = check_array_images(arrays)
    out = np.empty((len(arrays), size, size, 3), np.float32)
    for i, a in enumerate(arrays):
        out[i] = prepare_array(a, size)
    return out


def check_images(paths, progress: bool | None = None):
    """Read each file's header (:func:`vggtransfer.data.images.check_image`): ``(ok_indices, [BadItem])`` for the
    files that are not images. A million photos take minutes, not the better part of an hour a decode would; an image
    whose data turns out damaged when it is decoded is skipped and reported by the extraction. A bar (on a terminal,
    unless ``progress`` is False) shows when the check takes more than 2 s."""
    ok, bad = [], []
    for i, p in enumerate(bar(paths, progress=progress, desc="checking files", unit="file", delay=2, leave=False)):
        try:
            check_image(p)
            ok.append(i)
        except ImageError as exc:
            bad.append(BadItem(str(p), exc.reason if hasattr(exc, "reason") else str(exc)))
    return ok, bad


#: Folder names that mean a split, not a class: a root holding only these is a split layout (root/train/<class>/...).
SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing", "dev")


def from_folder(root, verify: bool = True, progress: bool | None = None) -> Dataset:
    """``root/<class>/<image>``: class names are the sorted sub-folder names; any image format the core loads.

    Images in sub-folders of a class folder belong to that class (as torchvision's ``ImageFolder``); hidden files
    and folders are skipped. A root that holds only split folders (``train/``, ``val/`` ... with class folders
    inside) is a :class:`DatasetError` naming the folder to give instead. With ``verify`` every file's header is
    read (:func:`check_images`) and files that are not images go to :attr:`Dataset.bad` (by path); damage inside
    an image's data shows when it is decoded (the extraction skips and reports it). Files with other extensions are
    reported too.
    """
    root = Path(root)
    if root.is_file():
        raise DatasetError(f"{root}: is a file; expected a folder of class folders ({root.name}/<class>/<image>)")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    class_dirs = sorted(d for d in entries if d.is_dir())
    loose = sorted(f for f in entries if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not class_dirs:
        held = f"; it holds {len(loose):,} image file(s) directly: move them into one folder per class" if loose else ""
        raise DatasetError(f"{root}: no class folders (expected {root}/<class>/<image files>){held}")
    if all(d.name.lower() in SPLIT_NAMES for d in class_dirs) and all(_has_subfolders(d) for d in class_dirs):
        names = ", ".join(d.name + "/" for d in class_dirs)
        train = next((d for d in class_dirs if d.name.lower().startswith("train")), class_dirs[0])
        raise DatasetError(f"{root}: holds split folders ({names}), not class folders; give one split, e.g. {train}")
    notes = _nested_layout_note(root, class_dirs)
    if loose:
        notes.append(
            f"{root}: {len(loose):,} image file(s) lie directly in the folder, outside any class folder (e.g. "
            f"{loose[0].name}): they have no class and are left out; move them into their class folder"
        )
    paths, labels, bad = [], [], []
    for c, d in enumerate(class_dirs):
        for f in files_under(d):
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                bad.append(BadItem(str(f), f"not an image file extension ({f.suffix or 'none'})"))
                continue
            paths.append(f)
            labels.append(c)
    if verify:
        ok, unreadable = check_images(paths, progress)
        bad.extend(unreadable)
        paths, labels = [paths[i] for i in ok], [labels[i] for i in ok]
    counts = np.bincount(np.array(labels, np.int64), minlength=len(class_dirs))
    empty = [d for d, n in zip(class_dirs, counts) if n == 0]
    if empty and len(empty) < len(class_dirs):
        names = ", ".join(str(d) for d in empty)
        raise DatasetError(
            f"{names}: class folder(s) with no usable image; a model cannot learn a class it never "
            "sees. Add images or remove the folder(s)"
        )
    classes = tuple(d.name for d in class_dirs)
    return Dataset(paths, np.array(labels, np.int64), classes, bad=bad, source=str(root), notes=notes)


def _nested_layout_note(root: Path, class_dirs: list) -> list:
    """A note when every class folder holds the same two or more sub-folders and no image of its own
    (``root/data/{tiger,kittycat}``, ``root/demo/{tiger,kittycat}``): most likely ``root`` is one level above the
    class folders, under split folders with names :data:`SPLIT_NAMES` does not know. Not an error: class folders
    that each hold the same sub-folders (by year, say) are a real layout too."""
    if len(class_dirs) < 2:
        return []
    inner = []
    for d in class_dirs:
        entries = [e for e in d.iterdir() if not e.name.startswith(".")]
        if any(e.is_file() and e.suffix.lower() in IMAGE_EXTENSIONS for e in entries):
            return []
        inner.append(sorted(e.name for e in entries if e.is_dir()))
    if len(inner[0]) < 2 or any(names != inner[0] for names in inner):
        return []
    outer = ", ".join(d.name + "/" for d in class_dirs)
    return [
        f"{root}: every class folder ({outer}) holds the same folders ({', '.join(n + '/' for n in inner[0])}) and "
        f"no image of its own; the classes are taken to be {', '.join(d.name for d in class_dirs)}. If "
        f"{', '.join(inner[0])} are the classes, give one of {outer} instead, e.g. {class_dirs[0]}"
    ]


def _has_subfolders(folder: Path) -> bool:
    return any(d.is_dir() and not d.name.startswith(".") for d in folder.iterdir())


def from_paths(paths, labels, classes=None, verify: bool = True, source: str = "") -> Dataset:
    """Image paths + label names (classification; classes = sorted names unless given) or numbers (regression)."""
    paths, labels = list(paths), list(labels)
    if len(paths) != len(labels):
        raise DatasetError(f"{source or 'data set'}: {len(paths)} paths but {len(labels)} labels")
    if classes is None and labels and isinstance(labels[0], str):
        classes = sorted(set(labels))
    return _labelled(list(map(str, paths)), labels, [str(p) for p in paths], classes, verify, source)


def _labelled(paths, raw_labels, names, classes, verify, source) -> Dataset:
    bad, keep_p, keep_y = [], [], []
    if classes:
        index = {str(c): i for i, c in enumerate(classes)}
        for p, y, name in zip(paths, raw_labels, names):
            if str(y) not in index:
                bad.append(BadItem(name, f"unknown label {y!r} (classes: {', '.join(map(str, classes))})"))
            else:
                keep_p.append(p)
                keep_y.append(index[str(y)])
        labels = np.array(keep_y, np.int64)
    else:
        for p, y, name in zip(paths, raw_labels, names):
            try:
                v = float(y)
                if not np.isfinite(v):
                    raise ValueError
            except (TypeError, ValueError):
                bad.append(BadItem(name, f"target {y!r} is not a finite number"))
                continue
            keep_p.append(p)
            keep_y.append(v)  # type: ignore[arg-type]  # numeric targets: floats
        labels = np.array(keep_y, np.float64)
    if verify:
        ok, unreadable = check_images(keep_p)
        bad.extend(unreadable)
        keep_p, labels = [keep_p[i] for i in ok], labels[ok] if len(labels) else labels
    return Dataset(keep_p, labels, tuple(classes or ()), bad=bad, source=source)


def _csv_rows(csv_path: Path) -> tuple:
    """``(rows, delimiter)``: the rows of a CSV as dicts keyed by its header's names, stripped of spaces. Read as
    spreadsheets write it: UTF-8 with or without Excel's byte-order mark; comma-separated, or tab- or
    semicolon-separated when the header holds no comma (a spreadsheet where the comma is the decimal mark)."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
        header = text.split("\n", 1)[0]
        delimiter = next((d for d in (",", "\t", ";") if d in header), ",")
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        if reader.fieldnames:
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
        return list(reader), delimiter
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: cannot read CSV ({exc})") from None


def _csv_path(csv_path: Path, text: str) -> Path:
    """A CSV row's image path: relative to the CSV's folder; a Windows path (``photos\\cat.jpg``, a CSV written on
    Windows) is read with ``/`` where it names no file as written but does so."""

    def under_csv(name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else csv_path.parent / p

    path = under_csv(text)
    if "\\" in text and os.sep != "\\" and not path.exists():
        windows = under_csv(text.replace("\\", "/"))
        if windows.exists():
            return windows
    return path


def from_csv(
    csv_path,
    task: str = "classification",
    classes=None,
    path_column: str = "path",
    label_column: str | None = None,
    verify: bool = True,
    progress: bool | None = None,
) -> Dataset:
    """A CSV with a header: ``path`` and ``label`` (classification) or ``target`` (regression) columns (names matched
    regardless of case and surrounding spaces; a spreadsheet's byte-order mark, tab or semicolon separators and, with
    semicolons, decimal commas in targets are read as meant; so are Windows paths with ``\\``).

    Relative paths are relative to the CSV's folder. Rows with an unknown label (when ``classes`` is given), a
    non-numeric target, a missing file or a file that is not an image (its header, as :func:`from_folder`) are
    reported as ``file.csv:ROW``.
    """
    csv_path = Path(csv_path)
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    label_column = label_column or ("label" if task == "classification" else "target")
    rows, delimiter = _csv_rows(csv_path)
    if not rows:
        raise DatasetError(f"{csv_path}: no rows")
    columns = [k for k in rows[0] if k]
    found = {}
    for col in (path_column, label_column):
        same = [k for k in columns if k == col] or [k for k in columns if k.lower() == col.lower()]
        if len(same) != 1:
            lower = [k.lower() for k in columns]
            other, hint = None, ""
            if col == label_column and task == "classification" and "target" in lower:
                other, hint = "regression", "; its 'target' column holds a regressor's numeric targets"
            elif col == label_column and task == "regression" and "label" in lower:
                other, hint = "classification", "; its 'label' column holds a classifier's class labels"
            raise MissingColumnError(f"{csv_path}: no column {col!r} (columns: {', '.join(columns)}){hint}", other)
        found[col] = same[0]
    decimal_comma = delimiter == ";" and task == "regression"  # 12,5 from a spreadsheet where "," is the decimal mark
    paths, raw, names = [], [], []
    for r, row in enumerate(rows, start=2):
        written = (row[found[path_column]] or "").strip()
        p = _csv_path(csv_path, written)
        paths.append(str(p))
        value = (row[found[label_column]] or "").strip()
        raw.append(value.replace(",", ".", 1) if decimal_comma and value.count(",") == 1 else value)
        names.append(f"{csv_path}:{r} ({written})")  # the path as the row gives it: file names repeat across folders
    if task == "classification" and classes is None:
        classes = sorted(set(y for y in raw if y))
    ds = _labelled(paths, raw, names, classes if task == "classification" else None, False, str(csv_path))
    if not verify:
        return ds
    name_of = dict(zip(paths, names))
    ok, unreadable = check_images(ds.paths, progress)
    bad = ds.bad + [BadItem(name_of.get(b.name, b.name), b.reason) for b in unreadable]
    return Dataset([ds.paths[i] for i in ok], ds.labels[ok], ds.classes, bad=bad, source=str(csv_path))


SIGNS_KEYS = ("{split}_set_x", "{split}_set_y", "list_classes")


def from_signs_h5(h5_path, split: str = "train") -> Dataset:
    """A SIGNS-style h5 file: ``{split}_set_x`` uint8 (n, h, w, 3), ``{split}_set_y`` (n,) int, ``list_classes``.

    Also read as such: grey images (n, h, w) or (n, h, w, 1), repeated to RGB; channels-first (n, 3, h, w) or
    (n, 1, h, w); float pixels in [0, 1]; labels stored as whole floats (1.0) or as (1, n) / (n, 1); no
    ``list_classes`` (the classes are then "0" .. the largest label). Wrong or missing keys and shapes raise
    :class:`DatasetError` naming the key; labels outside the classes are reported per item
    (``file.h5:{split}_set_y[i]``).
    """
    import h5py

    h5_path = Path(h5_path)
    xk, yk = f"{split}_set_x", f"{split}_set_y"
    if not h5_path.is_file():
        raise DatasetError(f"{h5_path}: {'is a folder' if h5_path.is_dir() else 'no such file'}; expected an .h5 file")
    try:
        fh = h5py.File(h5_path, "r")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{h5_path}: cannot open as HDF5 ({exc})") from None
    with fh:
        missing = [k for k in (xk, yk) if k not in fh]
        if missing:
            held = sorted(k[: -len("_set_x")] for k in fh.keys() if k.endswith("_set_x") and k[:-1] + "y" in fh)
            hint = f"; it holds the split(s): {', '.join(held)}" if held else ""
            raise DatasetError(
                f"{h5_path}: missing key(s) {', '.join(missing)} (has: {', '.join(sorted(fh.keys()))}){hint}"
            )
        x, y = fh[xk][()], fh[yk][()]
        cls = fh["list_classes"][()] if "list_classes" in fh else None
    x = _rgb_uint8(h5_path, xk, np.asarray(x))
    y = np.asarray(y)
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"{h5_path}: {yk} must have shape ({len(x)},), got {np.asarray(y).shape}")
    whole = _whole_labels(y)
    if cls is not None:
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in np.asarray(cls).reshape(-1)]
        if not classes:
            raise DatasetError(f"{h5_path}: list_classes is empty")
    else:
        top = max((int(v) for v, w in zip(y, whole) if w and v >= 0), default=-1)
        if top < 1:
            raise DatasetError(f"{h5_path}: no list_classes and {yk} has no whole-number labels 0..K-1 with K >= 2")
        classes = [str(i) for i in range(top + 1)]
    names = [f"{h5_path.name}:{xk}[{i}]" for i in range(len(x))]
    bad, keep = [], []
    for i, v in enumerate(y):
        if not whole[i] or not 0 <= int(v) < len(classes):
            label = np.asarray(v).item()  # 0.5, not np.float64(0.5)
            bad.append(
                BadItem(f"{h5_path.name}:{yk}[{i}]", f"label {label!r} is not a class index 0..{len(classes) - 1}")
            )
        else:
            keep.append(i)
    rows = np.array(keep, np.int64)
    return Dataset(
        [names[i] for i in rows],
        y[rows].astype(np.int64) if len(rows) else np.zeros(0, np.int64),
        tuple(classes),
        arrays=x[rows],
        bad=bad,
        source=f"{h5_path}[{split}]",
    )


def _rgb_uint8(h5_path, key: str, x: np.ndarray) -> np.ndarray:
    """An h5 image array as uint8 (n, h, w, 3): grey repeated to RGB, channels-first moved last, [0, 1] floats
    scaled to 0-255, 16-bit to 8; any other shape is a :class:`DatasetError` naming ``key``."""
    if x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = np.moveaxis(x, 1, -1)  # channels-first
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)  # grey
    if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 1:
        raise DatasetError(
            f"{h5_path}: {key} must hold images of shape (n, height, width, 3), (n, height, width) or "
            f"(n, 3, height, width), got {x.shape}"
        )
    if x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise DatasetError(f"{h5_path}: {key} must hold numbers (uint8 0-255 or floats 0-1), got {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and x.size and np.nanmax(x) <= 1.0:
            x = np.round(x * 255.0)
        elif x.dtype == np.uint16:
            x = np.round(x / 257.0)  # 16-bit pixels, as images.to_rgb converts I;16
        x = np.clip(np.nan_to_num(x), 0, 255).astype(np.uint8)
    return x


def _whole_labels(y: np.ndarray) -> np.ndarray:
    """Per label: is it a whole number (an int, or a float such as 1.0)?"""
    if np.issubdtype(y.dtype, np.integer):
        return np.ones(len(y), bool)
    if np.issubdtype(y.dtype, np.floating):
        return np.isfinite(y) & (y == np.round(y))
    return np.zeros(len(y), bool)


def signs_folder(folder) -> Dataset:
    """The CS230 JPEG layout of SIGNS: ``folder/{label}_IMG_{id}.jpg``, classes 0..5 from the file name prefix."""
    folder = Path(folder)
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    labels = [f.name.split("_", 1)[0] for f in files]
    return from_paths(files, labels, classes=[str(i) for i in range(6)], source=str(folder))


def concat(*datasets: Dataset) -> Dataset:
    """Items of several path data sets with the same classes, in order."""
    if not datasets:
        raise ValueError("concat needs at least one data set")
    first = datasets[0]
    for d in datasets[1:]:
        if d.classes != first.classes:
            raise ValueError(f"classes differ: {first.classes} vs {d.classes}")
    paths = [p for d in datasets for p in d.paths]
    labels = np.concatenate([d.labels for d in datasets])
    arrays = None if any(d.arrays is None for d in datasets) else np.concatenate([d.arrays for d in datasets])
    return Dataset(
        paths,
        labels,
        first.classes,
        arrays,
        [b for d in datasets for b in d.bad],
        " + ".join(d.source for d in datasets),
    )


DATA_HELP = (
    "a folder of class folders (DATA/<class>/<image>), a SIGNS-style .h5 file "
    "({split}_set_x, {split}_set_y, list_classes) or a .csv with a header (path,label or path,target)"
)


def from_path(path, split: str = "train", task: str = "classification", progress: bool | None = None) -> Dataset:
    """A Dataset from a folder of class folders, a SIGNS-style h5 file or a CSV, chosen by what ``path`` is.

    Folders and h5 files hold class labels: asking them for ``task='regression'`` is a :class:`DatasetError`
    (regression targets come from a CSV with ``path,target``).
    """
    path = Path(path)
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if path.is_dir():
        if task == "regression":
            raise DatasetError(
                f"{path}: a folder of class folders holds class labels, not regression targets; "
                "for regression give a CSV with a header path,target"
            )
        return from_folder(path, progress=progress)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        if task == "regression":
            raise DatasetError(
                f"{path}: a SIGNS-style h5 file holds class labels, not regression targets; for "
                "regression give a CSV with a header path,target"
            )
        return from_signs_h5(path, split)
    if suffix == ".csv":
        return from_csv(path, task=task, progress=progress)
    raise DatasetError(f"{path}: expected {DATA_HELP}")

"""Predictions as rows and result files: one dict per image (value or top-k classes, or the reason it failed), and
the CSV / JSON-lines writer used by ``vggtransfer predict --out`` and by sharded prediction."""

from __future__ import annotations

import json
import math
from pathlib import Path

from vggtransfer.models.classifier_api import ClassifierAPI

NON_FINITE = "the model produced a non-finite output (NaN or inf); the model file may be damaged or badly trained"


class ResultsPathError(ValueError):
    """A results file name that is neither .csv nor .jsonl."""


def predict_rows(model, images, top_k: int | None) -> list:
    """One dict per image, in order: ``{path, prediction}`` (regressor) or ``{path, top_k}`` (classifier), with
    ``error`` None or the reason. Non-finite model outputs are errors, so every row is strict JSON."""
    import warnings

    from vggtransfer.data.images import ImageError

    rows = []
    if isinstance(model, ClassifierAPI):
        for path, res in zip(images, model.predict_top_k(images, top_k or 1)):
            if isinstance(res, ImageError):
                rows.append({"path": path, "top_k": None, "error": res.reason})
            elif not all(math.isfinite(p) for _, p in res):
                rows.append({"path": path, "top_k": None, "error": NON_FINITE})
            else:
                rows.append({"path": path, "top_k": [{"class": c, "probability": p} for c, p in res], "error": None})
        return rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = model.predict(images, errors="report")
    errors = {e.path: e.reason for e in model.last_errors}
    for path, v in zip(images, values):
        if str(path) in errors:
            rows.append({"path": path, "prediction": None, "error": errors[str(path)]})
        elif not math.isfinite(v):
            rows.append({"path": path, "prediction": None, "error": NON_FINITE})
        else:
            rows.append({"path": path, "prediction": float(v), "error": None})
    return rows


RESULT_SUFFIXES = (".csv", ".jsonl", ".ndjson")


def check_results_path(path) -> Path:
    """``path`` as a results file (.csv or .jsonl); :class:`ResultsPathError` naming it otherwise."""
    path = Path(path)
    if path.suffix.lower() not in RESULT_SUFFIXES:
        raise ResultsPathError(f"{path}: expected a .csv or .jsonl file name")
    if path.is_file() and not _is_results_file(path):
        raise ResultsPathError(
            f"{path}: exists and is not a results file written by `vggtransfer predict`; it is never overwritten: "
            "choose another path"
        )
    return path


#: The header lines of the CSV results :func:`write_results` writes (regressor, classifier).
CSV_HEADERS = ("path,prediction,error", "path,rank,class,probability,error")


def _is_results_file(path: Path) -> bool:
    """Whether ``path`` holds results :func:`write_results` wrote (and so may be replaced): its CSV header, or JSON
    lines of ``{path, ..., error}`` objects, or nothing at all."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    if not first:
        return path.stat().st_size == 0
    if path.suffix.lower() == ".csv":
        return first in CSV_HEADERS
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and {"path", "error"} <= set(row)


def write_results(path, rows) -> None:
    """Write prediction rows (see :func:`predict_rows`) to ``path``: CSV or JSON lines by its suffix, atomically
    (a temp file renamed)."""
    import csv
    import os

    path = check_results_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # surrogateescape: a file name that is not valid UTF-8 is written back as the bytes it has on disk
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        if path.suffix.lower() == ".csv":
            w = csv.writer(fh)
            if rows and "top_k" in rows[0]:
                w.writerow(["path", "rank", "class", "probability", "error"])
                for r in rows:
                    for i, t in enumerate(r["top_k"] or [None], start=1):
                        w.writerow(
                            [
                                r["path"],
                                i if t else "",
                                t["class"] if t else "",
                                f"{t['probability']:.6g}" if t else "",
                                r["error"] or "",
                            ]
                        )
            else:
                w.writerow(["path", "prediction", "error"])
                for r in rows:
                    w.writerow(
                        [r["path"], "" if r["prediction"] is None else f"{r['prediction']:.6g}", r["error"] or ""]
                    )
        else:
            for r in rows:
                fh.write(json.dumps(r, allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


__all__ = ["NON_FINITE", "RESULT_SUFFIXES", "ResultsPathError", "check_results_path", "predict_rows", "write_results"]

"""Model directories: the one reader and the one writer of ``vggtransfer.json`` + the files beside it.

No TensorFlow here: the CLI checks a ``--model`` argument (and reads a saved model's kind) before it pays for
importing TensorFlow.

A save only ever replaces a previous *model*: a folder holding ``vggtransfer.json``. Any other existing file or
folder at the target (a data folder, a folder of photos, a CSV file, the current directory) is refused with
:class:`ModelError` naming it, before anything is written, renamed or deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

MODEL_FILE = "vggtransfer.json"
CHECKPOINT = "head.ckpt"
FORMAT_VERSION = 1


class ModelError(ValueError):
    """A model directory that cannot be restored or written (missing, incomplete, made with other weights, or a
    target that is not a model directory)."""


def is_model_dir(path) -> bool:
    """True for a folder holding ``vggtransfer.json`` (a saved model of any kind)."""
    path = Path(path)
    return path.is_dir() and (path / MODEL_FILE).is_file()


def backup_dir(model_dir) -> Path:
    """Where :func:`write_model_dir` keeps the previous model while it swaps in the new one."""
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + ".previous")


def overlapping(target: Path, protect=()):
    """The first of the ``protect`` paths that ``target`` (absolute) is, lies inside, or contains; else None."""
    for p in protect:
        if p is None:
            continue
        other = Path(os.path.abspath(Path(p).expanduser()))
        if target == other or other in target.parents or target in other.parents:
            return p
    return None


def check_model_target(path, protect=()) -> Path:
    """Check that a model may be saved at ``path``; returns it (absolute). Raises :class:`ModelError` when ``path``
    exists and is not a model directory, when it is or lies inside one of the ``protect`` paths (the training data),
    or when it contains one of them."""
    given = Path(path)
    target = Path(os.path.abspath(given.expanduser()))
    if not target.name or target == target.parent:
        raise ModelError(f"{given}: not usable as a model directory (give a folder name, e.g. models/mine)")
    try:
        str(target).encode("utf-8")
    except UnicodeEncodeError:  # a name's bytes that are not UTF-8 (surrogate escapes): TensorFlow cannot write them
        raise ModelError(
            f"{given}: a model's path must be valid UTF-8 (TensorFlow's checkpoint writer cannot name a "
            "file otherwise); choose a --model path without such bytes"
        ) from None
    if target.exists() and not target.is_dir():
        raise ModelError(
            f"{given}: exists and is a file, not a model directory; choose another --model path "
            "(an existing path is only replaced when it is a saved model)"
        )
    if target.is_dir() and not is_model_dir(target) and any(target.iterdir()):  # an empty folder holds nothing
        raise ModelError(
            f"{given}: exists and is a folder that is not a vggtransfer model (no {MODEL_FILE}); its "
            "files are left untouched. "
            "Choose a new --model path (an existing path is only replaced when it is a saved model)"
        )
    backup = backup_dir(target)
    if backup.exists() and not is_model_dir(backup):
        raise ModelError(
            f"{backup}: exists and is not a vggtransfer model; the save needs this name for the "
            "previous model. Move it or choose another --model path"
        )
    clash = overlapping(target, protect)
    if clash is not None:
        raise ModelError(f"{given}: overlaps the data at {clash}; save the model outside the data folder")
    return target


def load_model_json(model_dir) -> tuple:
    """``(config dict, directory it came from)`` for any saved model's ``vggtransfer.json``, falling back to the
    previous save (``DIR.previous``) if a save was interrupted."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        backup = backup_dir(model_dir)
        if backup.exists():
            model_dir = backup
        else:
            raise ModelError(f"{model_dir}: no such model directory")
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: is a file, expected a model directory saved by `vggtransfer train`")
    cfg_path = model_dir / MODEL_FILE
    if not cfg_path.is_file():
        raise ModelError(f"{model_dir}: not a vggtransfer model directory (no {MODEL_FILE})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{cfg_path}: unreadable model config ({exc})") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg, model_dir


def read_kind(model_dir) -> dict:
    """The model's ``vggtransfer.json`` with ``kind`` filled in (old regressors have none) and ``_dir`` set."""
    cfg, found = load_model_json(model_dir)
    if "kind" not in cfg:
        task = (cfg.get("head") or {}).get("task", "regression")
        cfg["kind"] = "classifier" if task == "classification" else "regressor"
    cfg["_dir"] = str(found)
    return cfg


def model_task(cfg: dict) -> str:
    """'regression' or 'classification' of a model's :func:`read_kind` configuration."""
    return "regression" if cfg["kind"] == "regressor" or cfg.get("task") == "regression" else "classification"


def checkpoint_files_missing(model_dir, checkpoint: str = CHECKPOINT) -> list:
    """The files of a TF checkpoint ``checkpoint`` in ``model_dir`` that are missing (index and data shards)."""
    model_dir = Path(model_dir)
    index = model_dir / (checkpoint + ".index")
    if not index.is_file():
        return [index.name]
    data = sorted(model_dir.glob(checkpoint + ".data-*"))
    if not data:
        return [checkpoint + ".data-00000-of-00001"]
    total = data[0].name.rsplit("-of-", 1)[-1]
    expected = [f"{checkpoint}.data-{i:05d}-of-{total}" for i in range(int(total))] if total.isdigit() else []
    return [name for name in expected if not (model_dir / name).is_file()]


def read_model_config(model_dir, kinds=("classifier", "regressor")) -> dict:
    """Read and check ``vggtransfer.json`` of a saved head model (see :func:`~vggtransfer.models.modeldir.load_model_json`):
    its kind (one of ``kinds``; old regressors have none), its fields, its format version and that every checkpoint
    file is there."""
    cfg, model_dir = load_model_json(model_dir)
    cfg_path = model_dir / MODEL_FILE
    if cfg.get("kind", "regressor") not in kinds:
        raise ModelError(
            f"{model_dir}: a saved {cfg['kind']!r} model, which this class does not restore; "
            "vggtransfer.load_model(dir) restores any kind"
        )
    for key in ("format_version", "arch", "end_point", "pooling", "image_size", "head", "weights_sha256"):
        if key not in cfg:
            raise ModelError(f"{cfg_path}: field {key!r} is missing")
    if not isinstance(cfg["format_version"], int) or cfg["format_version"] > FORMAT_VERSION:
        raise ModelError(
            f"{cfg_path}: format version {cfg['format_version']!r} is not one this library reads "
            f"(<= {FORMAT_VERSION}); upgrade vggtransfer"
        )
    missing = checkpoint_files_missing(model_dir, CHECKPOINT)
    if missing:
        raise ModelError(
            f"{model_dir}: checkpoint file(s) missing: {', '.join(missing)} (an incomplete copy of the model folder?)"
        )
    cfg["_dir"] = str(model_dir)
    return cfg


def restore_checkpoint(saver, session, model_dir) -> None:
    """``saver.restore`` from ``model_dir/head.ckpt``; a damaged checkpoint is a :class:`ModelError` naming it."""
    path = str(Path(model_dir) / CHECKPOINT)
    from vggtransfer.core.tf import error_summary, tf  # the rest of this module stays TensorFlow-free

    try:
        saver.restore(session, path)
    except (tf.errors.OpError, ValueError) as exc:
        why = error_summary(exc)
        raise ModelError(f"{model_dir}: checkpoint {CHECKPOINT} cannot be restored ({why})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_model_dir(path, write, protect=()) -> Path:
    """Write a model directory atomically: ``write(tmp_dir)`` fills a temp directory beside ``path``, its files are
    fsynced, then it is swapped in with renames. An interrupted save leaves the previous model readable (as ``path``
    or ``path.previous``, which :func:`load_model_json` falls back to). Only a previous model is ever replaced (see
    :func:`check_model_target`); the directory gets the usual permissions (0777 minus the umask)."""
    path = check_model_target(path, protect)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        write(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        backup = backup_dir(path)
        if path.exists():
            if backup.exists():
                shutil.rmtree(backup)
            if is_model_dir(path):
                os.replace(path, backup)
            else:  # an empty folder (checked above)
                path.rmdir()
        os.replace(tmp, path)
        if backup.exists():
            shutil.rmtree(backup)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


__all__ = [
    "MODEL_FILE",
    "CHECKPOINT",
    "FORMAT_VERSION",
    "ModelError",
    "is_model_dir",
    "check_model_target",
    "overlapping",
    "load_model_json",
    "read_kind",
    "model_task",
    "read_model_config",
    "restore_checkpoint",
    "write_model_dir",
    "backup_dir",
    "checkpoint_files_missing",
]

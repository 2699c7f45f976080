"""The worker side of scale-out: the job descriptions that cross process boundaries (plain data only), the worker
that builds its extractor or model once and computes shards, and the shard files it writes (atomic npz + stats JSON
done-marker). :mod:`vggtransfer.scale.shards` is the driver side."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHARD_SIZE = 256
RETRIES = 2
MANIFEST = "manifest.json"


class ScaleError(RuntimeError):
    """A sharded job that cannot finish (a shard failed more often than allowed, or Ray is missing)."""


def check_count(name: str, value, low: int) -> None:
    """ValueError naming ``name`` unless ``value`` is an int (not a bool, not a float) >= ``low``: the settings of a
    sharded job (workers, threads, retries, shard size, top-k, batch and image sizes)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")


class WorkerStartError(ScaleError):
    """A worker could not build its model or extractor (missing weights, a damaged model folder): the same on every
    retry, so the job stops at once with the worker's own message (the driver re-raises it as a ScaleError)."""


def _start(job: dict, threads: int | None, env: dict):
    """Build a worker's job; an error becomes its one-line message, kept for the first shard to report (raised in
    an initializer or an actor's constructor, it would only break the pool and print a traceback)."""
    os.environ.update(env)
    try:
        return make_job(job, threads)
    except Exception as exc:  # noqa: BLE001  # reported by every shard this worker is given
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _run_started(started, shard: int, rows: list, items: list, arrays, out_dir: str, attempt: int) -> dict:
    if isinstance(started, str):
        raise WorkerStartError(f"a worker could not start: {started}")
    return started.run(shard, rows, items, arrays, out_dir, attempt)


@dataclass(frozen=True)
class ExtractorSpec:
    """What each worker builds: plain data (crosses process and machine boundaries)."""

    weights: str
    arch: str = "vgg16"
    features: dict | None = None  # FeatureSpec.to_dict() for block features; None for a classic block
    end_point: str = "pool5"
    pooling: str = "avg"
    image_size: int = 224
    precision: str = "auto"
    batch_size: int | None = None

    def __post_init__(self):
        """Checked where it is made (the driver), so that a bad setting is one ValueError, not a failure of every
        worker's start-up. The weights file is read only by the workers (it may live on their file system)."""
        from vggtransfer.core.env import PRECISIONS
        from vggtransfer.features.spec import FeatureSpec
        from vggtransfer.nets.cfg import MIN_INPUT_SIDE, POOLINGS, get_cfg

        cfg = get_cfg(self.arch)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.batch_size is not None:
            check_count("batch_size", self.batch_size, 1)
        if self.features is not None:
            FeatureSpec.from_dict(self.features).check(self.arch)
            return
        cfg.layer(self.end_point)  # a ValueError naming the end points there are
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        check_count("image_size", self.image_size, MIN_INPUT_SIDE)

    def build(self, threads: int | None = None):
        """The extractor (call inside the worker)."""
        if self.features is not None:
            from vggtransfer.features.blocks import BlockExtractor
            from vggtransfer.features.spec import FeatureSpec

            return BlockExtractor(
                self.weights,
                FeatureSpec.from_dict(self.features),
                arch=self.arch,
                batch_size=self.batch_size,
                precision=self.precision,
                threads=threads,
            )
        from vggtransfer.features.extractor import FeatureExtractor

        return FeatureExtractor(
            self.weights,
            arch=self.arch,
            end_point=self.end_point,
            pooling=self.pooling,
            image_size=self.image_size,
            batch_size=self.batch_size,
            precision=self.precision,
            threads=threads,
        )

    def to_dict(self) -> dict:
        """Plain data (what crosses to the workers)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class ShardReport:
    """What happened to the shards of one run."""

    shards: int = 0
    skipped: int = 0  # done before this run
    computed: list = field(default_factory=list)  # stats dicts of shards computed now
    worker_deaths: list = field(default_factory=list)  # (shard, attempt, reason)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the job, one per shard computed now, one per worker death."""
        lines = [
            f"{self.shards} shards: {len(self.computed)} computed now, {self.skipped} already done"
            + (f", {len(self.worker_deaths)} worker death(s) retried" if self.worker_deaths else "")
        ]
        for st in sorted(self.computed, key=lambda s: s["shard"]):
            lines.append(
                f"  shard {st['shard']:05d}: {st['rows']} rows, {st['failed']} unreadable, "
                f"{st['seconds']:.1f} s on {st['worker']} (attempt {st['attempt']})"
            )
        for shard, attempt, reason in self.worker_deaths:
            lines.append(f"  shard {shard:05d}: worker died on attempt {attempt} ({reason}); retried")
        return "\n".join(lines)


# --- the worker side ------------------------------------------------------------------------------------------------
_WORKER: dict = {}


class ExtractJob:
    """Worker state for feature extraction: the extractor, built once."""

    def __init__(self, spec: dict, threads: int | None):
        self.extractor = ExtractorSpec(**spec).build(threads)

    def run(self, shard, rows, items, arrays, out_dir, attempt) -> dict:
        """Extract one shard (see :func:`extract_shard`)."""
        return extract_shard(self.extractor, shard, rows, items, arrays, Path(out_dir), attempt)


class PredictJob:
    """Worker state for prediction: the saved model, restored once."""

    def __init__(self, model_dir: str, weights: str | None, precision: str, top_k: int | None, threads: int | None):
        from vggtransfer.models.registry import load_model

        self.model = load_model(model_dir, weights, precision=precision, threads=threads)
        self.top_k = top_k

    def run(self, shard, rows, items, arrays, out_dir, attempt) -> dict:
        """Predict one shard's images; the stats file (the done marker) holds the result rows."""
        from vggtransfer.models.predictions import predict_rows

        t0 = time.perf_counter()
        results = predict_rows(self.model, items, self.top_k)
        stats = {
            "shard": shard,
            "rows": len(rows),
            "first_row": int(rows[0]) if rows else 0,
            "failed": sum(1 for r in results if r["error"]),
            "seconds": time.perf_counter() - t0,
            "items_per_second": len(rows) / max(time.perf_counter() - t0, 1e-9),
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "attempt": attempt,
            "finished_at": time.time(),
            "results": results,
        }
        _write_json(shard_names(Path(out_dir), shard)[1], stats)
        return stats


def make_job(job: dict, threads: int | None):
    """The worker state for a plain job description (``{'kind': 'extract' | 'predict', ...}``)."""
    args = {k: v for k, v in job.items() if k != "kind"}
    if job["kind"] == "extract":
        return ExtractJob(args["spec"], threads)
    if job["kind"] == "predict":
        return PredictJob(threads=threads, **args)
    raise ValueError(f"unknown job kind {job['kind']!r}")


def _init_worker(job: dict, threads: int | None, env: dict) -> None:
    """Process-pool initializer: quiet TensorFlow, then build the job's model once for this process."""
    _WORKER["job"] = _start(job, threads, env)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def shard_names(out_dir: Path, shard: int) -> tuple:
    """``(shard file, stats file)`` of shard number ``shard``."""
    return out_dir / f"shard-{shard:05d}.npz", out_dir / f"shard-{shard:05d}.json"


def extract_shard(extractor, shard: int, rows: list, items: list, arrays, out_dir: Path, attempt: int) -> dict:
    """Extract one shard's items with ``extractor`` and write its rows and stats (atomically); returns the stats.
    ``items`` are image paths, or names with ``arrays`` holding the images."""
    t0 = time.perf_counter()
    n = len(rows)
    feats = np.zeros((n, extractor.dim), np.float32)
    ok = np.zeros(n, bool)
    errors = {}
    if arrays is not None:
        if hasattr(extractor, "iter_views"):
            it = extractor.iter_views(list(range(n)), lambda i: extractor.views_of_array(arrays[i]))
            for f, idx, _ in it:
                feats[idx], ok[idx] = f, True
        else:
            from vggtransfer.data.datasets import resize_arrays

            feats[:] = extractor.extract_arrays(resize_arrays(np.asarray(arrays), extractor.image_size))
            ok[:] = True
    else:
        index = {p: i for i, p in enumerate(items)}
        for f, idx, errs in extractor.iter_paths(items):
            feats[idx], ok[idx] = f, True
            for e in errs:
                errors[index[str(e.path)]] = e.reason
    npz, stats_path = shard_names(out_dir, shard)
    tmp = npz.with_name(npz.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, rows=np.asarray(rows, np.int64), features=feats, ok=ok)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, npz)
    stats = {
        "shard": shard,
        "rows": n,
        "first_row": int(rows[0]) if n else 0,
        "failed": int((~ok).sum()),
        "errors": {str(rows[i]): r for i, r in errors.items()},
        "seconds": time.perf_counter() - t0,
        "items_per_second": n / max(time.perf_counter() - t0, 1e-9),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "attempt": attempt,
        "finished_at": time.time(),
        "config": extractor.config,
        "dim": int(extractor.dim),
    }
    _write_json(stats_path, stats)  # the done marker: last
    return stats


def _run_local_shard(shard: int, rows: list, items: list, arrays, out_dir: str, attempt: int) -> dict:
    return _run_started(_WORKER["job"], shard, rows, items, arrays, out_dir, attempt)


class ShardWorker:
    """A Ray actor (see :func:`_ray_worker_class`): builds the job's model once, then runs shards."""

    def __init__(self, job: dict, threads: int | None, env: dict):
        self.job = _start(job, threads, env)

    def run(self, shard: int, rows: list, items: list, arrays, out_dir: str, attempt: int) -> dict:
        """Run one shard of the job."""
        return _run_started(self.job, shard, rows, items, arrays, out_dir, attempt)

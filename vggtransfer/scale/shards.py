"""Scale-out: feature extraction sharded over worker processes (a local spawn pool, or Ray actors on a cluster).

The design follows img2dataset and Ray's batch inference:

- The items are split into numbered shards of ``shard_size``. Each shard is extracted by one worker and written to
  its own file beside the store (``STORE.shards/shard-00012.npz``), then a small stats file
  (``shard-00012.json``: rows, failures and why, seconds, worker, attempt, feature config) that is also its done
  marker. Both are written to a temporary name and renamed, so a shard is on disk completely or not at all.
- A worker builds its extractor (TensorFlow graph and session) once, in its constructor (a process initializer for
  the local pool, an actor for Ray), and extracts many shards; only plain configuration and item lists cross
  process boundaries. Workers are spawned, never forked (TensorFlow does not survive ``fork``).
- A rerun skips finished shards (their stats files exist) and computes the rest; a worker that dies is reported with
  its shard and the shard retried up to ``retries`` times; an unreadable image is a per-row error (as in
  :func:`vggtransfer.data.store.build_store`), never a failed shard.
- When every shard is done, they are merged into the one HDF5 store the rest of the library reads: same rows, same
  order, same configuration keys as :func:`~vggtransfer.data.store.build_store` in one process. The shard folder is then
  removed. ``manifest.json`` in the shard folder pins the items and the requested features, so shards of another
  job are never mixed in.

The module is over 400 lines because the driver's two back-ends (the local spawn pool and Ray actors) share the
shard bookkeeping (manifest, done markers, bounded retries, merge); the worker side is :mod:`vggtransfer.scale.worker`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggtransfer.core.env import ENV_VERBOSE, PRECISIONS
from vggtransfer.core.progress import bar as progress_bar
from vggtransfer.data.datasets import Dataset
from vggtransfer.scale.worker import (  # noqa: F401
    MANIFEST,
    RETRIES,
    SHARD_SIZE,
    ExtractorSpec,
    ScaleError,
    ShardReport,
    ShardWorker,
    WorkerStartError,
    _init_worker,
    _run_local_shard,
    _write_json,
    check_count,
    make_job,
    shard_names,
)


# --- the driver side ------------------------------------------------------------------------------------------------
def shard_dir(store_path) -> Path:
    """Where the shards of ``store_path`` are written: ``STORE.shards/`` beside it."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".shards")


def _worker_env() -> dict:
    from vggtransfer.core.env import ENV_VERBOSE

    keep = ("TF_CPP_MIN_LOG_LEVEL", ENV_VERBOSE, "VGGTRANSFER_MAX_PIXELS", "TF_ENABLE_ONEDNN_OPTS", "VGGTRANSFER_CACHE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _check_manifest(out_dir: Path, manifest: dict) -> None:
    path = out_dir / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != manifest:
            diff = sorted(k for k in set(manifest) | set(old or {}) if (old or {}).get(k) != manifest.get(k))
            raise ValueError(
                f"{out_dir}: shards of another job (differing: {', '.join(diff) or 'unreadable'}); "
                "delete the folder or choose another --store path"
            )
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, path)


def _done_shards(out_dir: Path, n_shards: int, need_npz: bool = True) -> dict:
    done = {}
    for s in range(n_shards):
        npz, stats = shard_names(out_dir, s)
        if stats.is_file() and (npz.is_file() or not need_npz):
            try:
                done[s] = json.loads(stats.read_text())
            except (OSError, json.JSONDecodeError):
                continue
    return done


def default_threads(workers: int) -> int:
    """Intra-op threads per worker so that workers x threads = the cores of this machine (at least 1)."""
    from vggtransfer.core.runtime import cpu_count

    return max(1, cpu_count() // max(1, workers))


@dataclass(frozen=True)
class Engine:
    """How the shards run, the same for a store and for predictions: ``workers`` processes (or Ray actors where
    ``use_ray``; ``ray_address`` None starts a local Ray, 'auto' joins a cluster) of ``threads`` intra-op threads each,
    a failed shard retried ``retries`` times, one progress bar, ``log`` for the notices."""

    workers: int
    threads: int
    use_ray: bool
    ray_address: str | None
    retries: int
    progress: bool | None
    log: object

    @classmethod
    def of(cls, workers, threads, use_ray, ray_address, retries, progress, log) -> Engine:
        """Checked (``workers``, ``threads`` >= 1, ``retries`` >= 0), with ``threads`` defaulting to cores / workers."""
        for name, value, low in (("workers", workers, 1), ("threads", threads, 1), ("retries", retries, 0)):
            if value is not None:
                check_count(name, value, low)
        return cls(workers, threads or default_threads(workers), use_ray, ray_address, retries, progress, log)


def count_shards(n: int, shard_size) -> int:
    """How many shards ``n`` items make; ValueError unless ``shard_size`` is a whole number >= 1."""
    check_count("shard_size", shard_size, 1)
    return (n + shard_size - 1) // shard_size


def build_store_sharded(
    path,
    dataset: Dataset,
    spec: ExtractorSpec,
    *,
    workers: int = 2,
    threads: int | None = None,
    ray_address: str | None = None,
    use_ray: bool = False,
    shard_size: int = SHARD_SIZE,
    retries: int = RETRIES,
    progress: bool | None = None,
    log=None,
) -> ShardReport:
    """Extract ``dataset`` into the HDF5 store ``path`` with ``workers`` processes (see the module doc).

    ``use_ray``: Ray actors (``ray_address``: ``None`` starts a local Ray, ``'auto'`` joins a running cluster, or
    an address); otherwise a local pool of spawned processes. Returns a :class:`ShardReport`; the store is the
    same as :func:`vggtransfer.data.store.build_store` writes in one process.
    """
    from vggtransfer.data.store import items_digest

    t0 = time.perf_counter()
    path = Path(path)
    engine = Engine.of(workers, threads, use_ray, ray_address, retries, progress, log)
    n = len(dataset)
    n_shards = count_shards(n, shard_size)
    out_dir = shard_dir(path)
    manifest = {
        "items_sha256": items_digest(dataset),
        "n": n,
        "shard_size": shard_size,
        "extractor": {k: v for k, v in spec.to_dict().items() if k not in ("batch_size",)},
    }
    report = ShardReport(shards=n_shards)
    if path.exists() and not out_dir.exists():
        _check_existing_store(path, dataset, spec)
        report.seconds = time.perf_counter() - t0
        return report  # finished before

    def shard_job(s):
        rows = list(range(s * shard_size, min(n, (s + 1) * shard_size)))
        items = [dataset.paths[r] for r in rows]
        arrays = dataset.arrays[rows[0] : rows[-1] + 1] if dataset.arrays is not None and rows else None
        return rows, items, arrays

    run_shards(
        {"kind": "extract", "spec": spec.to_dict()},
        manifest,
        out_dir,
        n_shards,
        n,
        shard_job,
        report,
        engine,
        desc=f"store {path.name}",
    )
    _merge(path, dataset, out_dir, n_shards)
    shutil.rmtree(out_dir, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def run_shards(
    job: dict,
    manifest: dict,
    out_dir: Path,
    n_shards: int,
    n_items: int,
    shard_job,
    report: ShardReport,
    engine: Engine,
    *,
    desc: str,
    need_npz: bool = True,
) -> dict:
    """Run every shard not yet done (one progress bar over the items); returns ``{shard: stats}`` of all shards."""
    _check_manifest(out_dir, manifest)
    done = _done_shards(out_dir, n_shards, need_npz)
    report.skipped = len(done)
    todo = [s for s in range(n_shards) if s not in done]
    with progress_bar(
        total=n_items, initial=sum(st["rows"] for st in done.values()), desc=desc, unit="img", progress=engine.progress
    ) as bar:

        def finished(stats):
            report.computed.append(stats)
            done[stats["shard"]] = stats
            bar.update(stats["rows"])

        if todo:
            run = _run_ray if engine.use_ray else _run_local
            run(todo, shard_job, job, engine, str(out_dir), finished, report)
    return done


def _check_existing_store(path: Path, dataset: Dataset, spec: ExtractorSpec) -> None:
    """A finished store at ``path``: it must be complete and hold these items (its configuration is checked by
    whoever reads it with a model's configuration)."""
    from vggtransfer.data.store import _h5_open, items_digest

    with _h5_open(path, "r") as fh:
        if "done" not in fh or "config" not in fh.attrs:
            raise ValueError(
                f"{path}: an HDF5 file but not a feature store; choose another --store path (it is never overwritten)"
            )
        if fh.attrs.get("items_sha256") != items_digest(dataset):
            raise ValueError(f"{path}: a feature store of other items; choose another --store path")
        if not fh["done"][()].all():
            raise ValueError(f"{path}: an incomplete single-process store; resume it without --workers/--ray")
        stored = json.loads(fh.attrs["config"])
    if stored.get("precision") and spec.precision in ("fp32", "bf16") and stored["precision"] != spec.precision:
        from vggtransfer.data.store import FeatureStoreMismatch

        raise FeatureStoreMismatch(path, {"precision": (stored["precision"], spec.precision)})


def _retry_or_fail(shard, attempts, retries, reason, report, log):
    attempts[shard] = attempts.get(shard, 1) + 1
    report.worker_deaths.append((shard, attempts[shard] - 1, reason))
    if log:
        log(f"shard {shard:05d}: worker died ({reason}); retry {attempts[shard] - 1} of {retries}")
    if attempts[shard] - 1 > retries:
        raise ScaleError(
            f"shard {shard:05d} failed {attempts[shard] - 1} times ({reason}); giving up (finished "
            "shards are kept: rerun the command to continue)"
        )


def _run_local(todo, shard_job, job, engine, out_dir, finished, report):
    import concurrent.futures as cf
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    queue = list(todo)
    attempts: dict = {}
    ctx = mp.get_context("spawn")
    while queue:
        with cf.ProcessPoolExecutor(
            max_workers=min(engine.workers, len(queue)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(job, engine.threads, _worker_env()),
        ) as pool:
            futures = {pool.submit(_run_local_shard, s, *shard_job(s), out_dir, attempts.get(s, 1)): s for s in queue}
            queue = []
            broken = False
            for fut in cf.as_completed(futures):
                s = futures[fut]
                try:
                    finished(fut.result())
                except WorkerStartError as exc:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise ScaleError(str(exc)) from None
                except BrokenProcessPool as exc:
                    broken = True
                    _retry_or_fail(s, attempts, engine.retries, f"process pool broken: {exc}", report, engine.log)
                    queue.append(s)
            if broken:
                queue = sorted(set(queue))


def _ray_worker_class(threads: int):
    import ray

    return ray.remote(num_cpus=threads, max_restarts=0)(ShardWorker)


def _run_ray(todo, shard_job, job, engine, out_dir, finished, report):
    try:
        import ray
    except ImportError:
        raise ScaleError("--ray needs Ray: pip install 'vggtransfer[ray]'") from None
    if not ray.is_initialized():
        if not os.environ.get(ENV_VERBOSE):  # Ray's notice of its default auth mode, at every start: --verbose shows it
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if engine.ray_address:
            ray.init(address=engine.ray_address, **kwargs)
        else:
            from vggtransfer.core.runtime import cpu_count

            ray.init(num_cpus=max(cpu_count(), engine.workers * engine.threads), **kwargs)
    cls = _ray_worker_class(engine.threads)
    env = _worker_env()
    actors = [cls.remote(job, engine.threads, env) for _ in range(min(engine.workers, len(todo)))]
    queue = list(todo)
    attempts: dict = {}
    running = {}  # future -> (shard, actor index)
    idle = list(range(len(actors)))
    while queue or running:
        while queue and idle:
            a = idle.pop()
            s = queue.pop(0)
            rows, items, arrays = shard_job(s)
            running[actors[a].run.remote(s, rows, items, arrays, out_dir, attempts.get(s, 1))] = (s, a)
        ready, _ = ray.wait(list(running), num_returns=1)
        fut = ready[0]
        s, a = running.pop(fut)
        try:
            finished(ray.get(fut))
            idle.append(a)
        except WorkerStartError as exc:  # Ray's task error is also an instance of the worker's exception class
            for actor in actors:  # the others fail the same way: stop them, and take their results (else Ray
                ray.kill(actor)  # prints each unretrieved error with its traceback when the driver lets go)
            for pending in running:
                try:
                    ray.get(pending)
                except Exception:  # noqa: BLE001, S110  # the same start-up error, or the kill
                    pass
            raise ScaleError(str(exc).strip().splitlines()[-1].split("WorkerStartError: ", 1)[-1]) from None
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            _retry_or_fail(s, attempts, engine.retries, f"{type(exc).__name__}", report, engine.log)
            queue.append(s)
            actors[a] = cls.remote(job, engine.threads, env)  # a fresh worker in its place
            idle.append(a)


def _merge(path: Path, dataset: Dataset, out_dir: Path, n_shards: int) -> None:
    """Write the finished shards into the one store at ``path`` (atomically: a temp file renamed)."""
    import h5py

    from vggtransfer.data.store import _create, h5_text, items_digest

    stats = [json.loads(shard_names(out_dir, s)[1].read_text()) for s in range(n_shards)]
    configs = {json.dumps(st["config"], sort_keys=True) for st in stats}
    if len(configs) > 1:
        raise ScaleError(
            f"{out_dir}: shards were made with different feature configurations; delete the folder and rerun"
        )
    config = stats[0]["config"] if stats else {}
    dim = stats[0]["dim"] if stats else 0
    tmp = path.with_name(path.name + ".merging")
    if tmp.exists():
        tmp.unlink()
    _create(tmp, dataset, config, dim, SHARD_SIZE, items_digest(dataset))
    with h5py.File(tmp, "r+") as fh:
        for s, st in enumerate(stats):
            with np.load(shard_names(out_dir, s)[0], allow_pickle=False) as data:
                rows = data["rows"]
                if len(rows):
                    lo, hi = int(rows[0]), int(rows[-1]) + 1
                    fh["features"][lo:hi] = data["features"]
                    fh["ok"][lo:hi] = data["ok"]
                    for r, reason in st["errors"].items():
                        fh["error"][int(r)] = h5_text(reason)
                    fh["done"][lo:hi] = True
        fh.flush()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def predict_sharded(
    model_dir,
    paths,
    out,
    *,
    weights=None,
    precision: str = "auto",
    top_k: int | None = None,
    workers: int = 2,
    threads: int | None = None,
    use_ray: bool = False,
    ray_address=None,
    shard_size: int = SHARD_SIZE,
    retries: int = RETRIES,
    progress: bool | None = None,
    log=None,
) -> tuple:
    """Predict image files with a saved model over ``workers`` processes (or Ray actors), in shards beside ``out``;
    the rows (one per path, in order, ``error`` per item) are written to ``out`` (.csv or .jsonl, see
    :func:`vggtransfer.models.predictions.write_results`) once every shard is done. Returns ``(ShardReport, rows)``."""
    import hashlib

    from vggtransfer.data.images import path_list
    from vggtransfer.models.modeldir import model_task, read_kind
    from vggtransfer.models.predictions import check_results_path, write_results

    t0 = time.perf_counter()
    out = check_results_path(out)  # before any shard runs
    engine = Engine.of(workers, threads, use_ray, ray_address, retries, progress, log)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if top_k is not None:
        check_count("top_k", top_k, 1)
    cfg = read_kind(model_dir)
    if top_k is not None and model_task(cfg) == "regression":
        raise ValueError(f"{cfg['_dir']}: a regressor has no top_k (it predicts one value per image)")
    paths, _ = path_list(paths, "paths")
    n = len(paths)
    n_shards = count_shards(n, shard_size)
    out_dir = shard_dir(out)
    digest = hashlib.sha256("\0".join(os.path.abspath(p) for p in paths).encode("utf-8", "surrogateescape")).hexdigest()
    model = os.path.abspath(cfg["_dir"])
    manifest = {
        "items_sha256": digest,
        "n": n,
        "shard_size": shard_size,
        "model": model,
        "model_saved_at": cfg.get("saved_at"),
        "top_k": top_k,
        "precision": precision,
    }
    report = ShardReport(shards=n_shards)

    def shard_job(s):
        rows = list(range(s * shard_size, min(n, (s + 1) * shard_size)))
        return rows, [paths[r] for r in rows], None

    job = {
        "kind": "predict",
        "model_dir": model,
        "weights": None if weights is None else str(weights),
        "precision": precision,
        "top_k": top_k,
    }
    done = run_shards(
        job, manifest, out_dir, n_shards, n, shard_job, report, engine, desc=f"predict {out.name}", need_npz=False
    )
    rows = [r for s in range(n_shards) for r in done[s]["results"]]
    write_results(out, rows)
    shutil.rmtree(out_dir, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report, rows


__all__ = [
    "ExtractorSpec",
    "ShardReport",
    "ShardWorker",
    "ScaleError",
    "build_store_sharded",
    "predict_sharded",
    "count_shards",
    "run_shards",
    "shard_dir",
    "default_threads",
    "SHARD_SIZE",
    "RETRIES",
]

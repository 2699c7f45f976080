"""Session settings chosen once: threads, batch size, and the bf16 mode (oneDNN auto mixed precision) where the CPU
has it. Every default here is overridable (``threads=``, ``batch_size=``, ``precision=`` in the API).

Defaults, from the measurements in BENCHMARKS.md (bench/bench_throughput.py):

- threads: one intra-op thread per core available to the process, one inter-op pool (the VGG graph is a chain, so
  inter-op parallelism only adds contention);
- batch size: 16 at 224 px, scaled to keep the pixels per batch constant at other sizes (64 px: 128), capped at 128;
  small batches at small sizes leave the cores idle between session calls;
- precision: fp32; ``bf16`` turns on oneDNN's auto mixed precision rewrite for the convolutions (bf16 inputs and
  weights, fp32 accumulation; about 2x faster on CPUs with AVX512_BF16 or AMX) while dense layers (heads) stay
  fp32, and falls back to fp32 with a warning where the CPU or the TensorFlow build cannot do it.
"""

from __future__ import annotations

import math
import os
import threading
import warnings

from vggtransfer.core.env import PRECISIONS
from vggtransfer.core.tf import tf

tf1 = tf.compat.v1


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512_BF16 or AMX on x86; Linux /proc/cpuinfo flags)."""
    return bool(cpu_bf16_flags())


def describe_precision(precision: str = "auto") -> str:
    """One line saying what ``precision`` resolves to here and why (the CLI prints it once per command)."""
    resolved = resolve_precision(precision)
    if precision != "auto":
        return f"precision {resolved}"
    if resolved == "bf16":
        return f"precision auto: bf16 (this CPU has {' and '.join(cpu_bf16_flags())})"
    return f"precision auto: fp32 ({bf16_unavailable_reason()})"


def onednn_enabled() -> bool:
    """False when oneDNN is switched off (TF_ENABLE_ONEDNN_OPTS=0): the bf16 rewrite then has no kernels to use."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false", "off", "no")


def bf16_unavailable_reason() -> str | None:
    """Why bf16 cannot run here, or None when it can."""
    if not cpu_has_bf16():
        return "this CPU has no native bf16 arithmetic (avx512_bf16 / amx_bf16)"
    if not onednn_enabled():
        return "oneDNN is switched off (TF_ENABLE_ONEDNN_OPTS=0)"
    return None


def cpu_bf16_flags() -> list:
    """The native bf16 flags of this CPU (``amx_bf16``, ``avx512_bf16``), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = set(fh.read().split())
    except OSError:
        return []
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def resolve_precision(precision: str) -> str:
    """Validate ``precision``: 'auto' (the default everywhere) is bf16 where the CPU runs it natively (AMX-BF16 or
    AVX512-BF16) and oneDNN is on, else fp32; 'bf16' falls back to fp32 with a warning where it cannot run (see
    :func:`bf16_unavailable_reason`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_unavailable_reason() is None else "fp32"
    if precision == "bf16":
        reason = bf16_unavailable_reason()
        if reason is not None:
            warnings.warn(f"precision='bf16' requested but {reason}; running in fp32", RuntimeWarning, stacklevel=3)
            return "fp32"
    return precision


#: Batch size at 224 px; other sizes keep the pixels per batch (16 x 224^2) up to MAX_BATCH.
BATCH_224 = 16
MAX_BATCH = 128


def default_batch_size(image_size: int) -> int:
    """The library's batch size for square inputs of ``image_size``: 16 at 224 px, 128 at 64 px (a power of two)."""
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    target = BATCH_224 * (224.0 / image_size) ** 2
    return int(min(MAX_BATCH, max(1, 2 ** round(math.log2(target)))))


def default_threads() -> int:
    """Intra-op threads: one per core this process may run on."""
    return cpu_count()


def lower_priority_of_this_thread(increment: int = 10) -> None:
    """Make the calling thread yield to the compute threads (Linux: per-thread nice; elsewhere a no-op).

    Decoding threads run beside TensorFlow's intra-op threads on the same cores; a preempted compute thread stalls
    its partner at every oneDNN barrier, so the decoders should be the ones that wait.
    """
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except (AttributeError, OSError):
        pass


def session_config(precision: str = "fp32", threads: int | None = None):
    """A ConfigProto: intra-op threads = ``threads`` (default: all cores), one inter-op pool, and for bf16 oneDNN's
    auto mixed precision graph rewrite (convolutions in bf16, accumulation in fp32; dense layers fp32)."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    threads = threads or default_threads()
    config = tf1.ConfigProto(
        intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1, allow_soft_placement=True
    )
    if resolve_precision(precision) == "bf16":
        from tensorflow.core.protobuf import rewriter_config_pb2

        keep_dense_layers_in_fp32()

        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
            rewriter_config_pb2.RewriterConfig.ON
        )
    return config


#: Read by TensorFlow's mixed-precision rewrite each time it runs (a user's own setting is kept).
_AMP_ALLOWLIST_REMOVE = "TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_ALLOWLIST_REMOVE"


def keep_dense_layers_in_fp32() -> None:
    """In bf16 mode only the convolutions (where the time goes) run in bf16: dense layers (the heads, trained on
    cached features in milliseconds) stay fp32, so head training and its accuracy are the same as in fp32 mode.

    TensorFlow offers this only process-wide, through an environment variable read by the rewrite; a value the
    user has set is left alone.
    """
    os.environ.setdefault(_AMP_ALLOWLIST_REMOVE, "MatMul,BatchMatMul,BatchMatMulV2,_FusedMatMul")


def new_session(graph, precision: str = "fp32", threads: int | None = None):
    """A session on ``graph`` with :func:`session_config`'s threads and precision."""
    return tf1.Session(graph=graph, config=session_config(precision, threads))


class Closing:
    """``close()`` closes what the object owns (:meth:`_owned`: by default its ``session``), and ``with obj:`` closes
    it on leaving the block. One implementation for extractors, heads and models."""

    def _owned(self) -> tuple:
        return (getattr(self, "session", None),)

    def close(self) -> None:
        """Close the TensorFlow sessions this object owns (it cannot compute afterwards)."""
        for owned in self._owned():
            if owned is not None:
                owned.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

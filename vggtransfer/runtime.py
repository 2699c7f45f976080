"""Session settings chosen once: threads, and the bf16 mode (oneDNN auto mixed precision) where the CPU has it."""

from __future__ import annotations

import os
import warnings

import tensorflow as tf

tf1 = tf.compat.v1

PRECISIONS = ("fp32", "bf16")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512_BF16 or AMX on x86; Linux /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def resolve_precision(precision: str) -> str:
    """Validate ``precision``; fall back to fp32 with a warning where bf16 is not supported by this CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and not cpu_has_bf16():
        warnings.warn("precision='bf16' requested but this CPU has no native bf16 (avx512_bf16/amx_bf16); "
                      "running in fp32", RuntimeWarning, stacklevel=3)
        return "fp32"
    return precision


def session_config(precision: str = "fp32", threads: int | None = None) -> tf1.ConfigProto:
    """A ConfigProto: intra-op threads = ``threads`` (default: all cores), one inter-op pool, and for bf16 oneDNN's
    auto mixed precision graph rewrite (convolutions and matmuls in bf16, accumulation in fp32)."""
    threads = threads or cpu_count()
    config = tf1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1,
                             allow_soft_placement=True)
    if resolve_precision(precision) == "bf16":
        from tensorflow.core.protobuf import rewriter_config_pb2

        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    return config


def new_session(graph: tf.Graph, precision: str = "fp32", threads: int | None = None) -> tf1.Session:
    return tf1.Session(graph=graph, config=session_config(precision, threads))

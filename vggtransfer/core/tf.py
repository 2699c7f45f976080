"""The one place the package imports TensorFlow: quietly, unless asked.

TensorFlow's C++ side writes notices to file descriptor 2 while it is imported (``WARNING: All log messages before
absl::InitializeLog() ...``, ``oneDNN custom operations are on``, ``cpu_feature_guard ... rebuild TensorFlow``);
``TF_CPP_MIN_LOG_LEVEL`` removes only the later ones. So the import runs with descriptor 2 pointed at /dev/null, and
``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 for what comes after. ``VGGTRANSFER_VERBOSE=1`` (the CLI's ``--verbose``)
keeps everything; a ``TF_CPP_MIN_LOG_LEVEL`` the user set is never overridden.
"""

from __future__ import annotations

import os
import sys

from vggtransfer.core.env import ENV_VERBOSE


def verbose() -> bool:
    """True when TensorFlow's own notices should be shown (``$VGGTRANSFER_VERBOSE`` is set and not 0)."""
    return os.environ.get(ENV_VERBOSE, "").strip().lower() not in ("", "0", "false", "no", "off")


def _import_tensorflow():
    if verbose() or "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing to silence
        import tensorflow

        return tensorflow
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


tf = _import_tensorflow()
tf1 = tf.compat.v1


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """The line of a TensorFlow error that says what went wrong. Graph-mode errors open with "Graph execution
    error:" and the Python stack where the node was defined; the cause ("Read less bytes than requested") comes after
    them. Falls back to the first line."""
    lines = [line.strip() for line in str(getattr(exc, "message", exc)).strip().splitlines()]
    noise = ("Graph execution error", "Detected at node", "File ", "Node:", "[[")
    useful = [line for line in lines if line and not line.startswith(noise)]
    return (useful or lines or [type(exc).__name__])[0][:limit]


__all__ = ["tf", "tf1", "verbose", "error_summary", "ENV_VERBOSE"]

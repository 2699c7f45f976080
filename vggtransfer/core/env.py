"""Names shared with :mod:`vggtransfer.core.tf` that must be importable without importing TensorFlow."""

ENV_VERBOSE = "VGGTRANSFER_VERBOSE"

"""Names shared with :mod:`vggtransfer._tf` that must be importable without importing TensorFlow."""

ENV_VERBOSE = "VGGTRANSFER_VERBOSE"

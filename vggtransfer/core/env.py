"""Names shared with :mod:`vggtransfer.core.tf` and :mod:`vggtransfer.core.runtime` that must be importable without
importing TensorFlow (the CLI's parser, the sharded jobs' driver)."""

ENV_VERBOSE = "VGGTRANSFER_VERBOSE"

#: The ``precision`` settings of every extractor and model (see :func:`vggtransfer.core.runtime.resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16")

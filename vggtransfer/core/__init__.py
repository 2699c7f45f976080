"""Layer 0, what every other layer uses: the quiet TensorFlow import (:mod:`~vggtransfer.core.tf`), runtime settings
(precision, threads, sessions: :mod:`~vggtransfer.core.runtime`), progress bars, the HTTP session factory.
"""

"""Scale-out over many workers: sharded feature extraction and prediction on a local spawn pool or Ray actors
(:mod:`vggtransfer.scale.shards`, the driver; :mod:`vggtransfer.scale.worker`, the worker side)."""

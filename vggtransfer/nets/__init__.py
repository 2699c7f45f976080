"""Layer 1, the networks: the architecture table (:mod:`~vggtransfer.nets.cfg`: layers, channels, strides,
``feature_info``, one :class:`~vggtransfer.nets.cfg.ArchCfg` per VGG) and the one conv builder
(:func:`vggtransfer.nets.vgg.vgg_conv`).
"""

"""Layer 4, frozen features: what a feature row holds (:mod:`~vggtransfer.features.spec`), the single-block
:class:`~vggtransfer.features.extractor.FeatureExtractor` and the multi-block, multi-scale
:class:`~vggtransfer.features.blocks.BlockExtractor`.
"""

"""vggtransfer: transfer learning from ImageNet-pretrained VGG networks, TF1 graph style, CPU first.

The public API (TensorFlow is imported on first use, so ``import vggtransfer`` stays cheap):

- :class:`Vgg16` — frozen VGG16 conv layers + trainable fc6 (256, ReLU) + a regressor: train / save / predict;
  by default its input blocks and L2 are chosen by cross-validation and its output calibrated.
- :class:`AutoClassifier`, :class:`AutoRegressor` — the auto recipe (the default): block features, a
  cross-validated choice of block group, model and regularisation, calibrated outputs.
- :class:`BlockExtractor`, :class:`FeatureSpec` — several pooled blocks of the whole image, at any size, in one pass.
- :class:`FeatureExtractor` — frozen conv features of image files or arrays at any end point and pooling.
- :func:`load_weights`, :func:`resolve_weights` — safe vgg16.npy / vgg19.npy loading and weight fetching.
- :func:`load_image`, :class:`ImageError` — image decoding with clear errors.
- :func:`export_saved_model` — any trained model as a TensorFlow SavedModel serving image bytes.
"""

__version__ = "0.1.0"

_LAZY = {
    "Vgg16": ("models.vgg16", "Vgg16"),
    "AutoClassifier": ("models.auto", "AutoClassifier"),
    "AutoRegressor": ("models.auto", "AutoRegressor"),
    "BlockExtractor": ("features.blocks", "BlockExtractor"),
    "FeatureSpec": ("features.spec", "FeatureSpec"),
    "TransferModel": ("models.transfer", "TransferModel"),
    "ModelError": ("models.modeldir", "ModelError"),
    "VggClassifier": ("models.classifier", "VggClassifier"),
    "load_model": ("models.registry", "load_model"),
    "FeatureExtractor": ("features.extractor", "FeatureExtractor"),
    "HeadSpec": ("models.heads", "HeadSpec"),
    "load_weights": ("weights.npy", "load_weights"),
    "WeightsError": ("weights.npy", "WeightsError"),
    "resolve_weights": ("weights.sources", "resolve_weights"),
    "load_image": ("data.images", "load_image"),
    "ImageError": ("data.images", "ImageError"),
    "download_images": ("data.download", "download_images"),
    "export_saved_model": ("serving.export", "export_saved_model"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vggtransfer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

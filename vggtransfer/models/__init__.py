"""Layer 5, the models: heads, the kinds (auto, head regressor/classifier, linear, fine-tuned, the card's ``Vgg16``),
the model directory reader and writer, and the registry that restores any saved kind
(:func:`vggtransfer.models.registry.load_model`).
"""

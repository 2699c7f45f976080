"""Layer 2, the weights: the vgg16.npy format read safely (:mod:`~vggtransfer.weights.npy`), where ImageNet weights come
from (:mod:`~vggtransfer.weights.sources`) and the Keras .h5 / ONNX conversions (:mod:`~vggtransfer.weights.convert`).
"""

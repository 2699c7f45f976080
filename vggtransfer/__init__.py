"""vggtransfer: transfer learning from ImageNet-pretrained VGG networks, TF1 graph style, CPU first."""

__version__ = "0.1.0"

"""The VGG architectures, declared once (timm style): one :class:`ArchCfg` per network, with its layers, channels and
strides (``feature_info``), its input convention and its minimum input size. TensorFlow-free: the CLI, the weight
loader and the feature specs read it without importing TensorFlow; :mod:`vggtransfer.nets.vgg` builds graphs from it.

>>> cfg = get_cfg("vgg16")
>>> cfg.feature_info[-1]
{'module': 'pool5', 'num_chs': 512, 'reduction': 32}
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

#: Preprocessing every weight file of the vgg16.npy layout expects (the Caffe convention): BGR, 0..255, this mean
#: subtracted.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)

#: The smallest image side the conv stack takes (five 2x2 poolings), and so the smallest photo the library decodes.
MIN_INPUT_SIDE = 32

#: How an end point's feature map becomes a vector (:func:`vggtransfer.nets.vgg.pool`).
POOLINGS = ("flatten", "max", "avg")


@dataclass(frozen=True)
class Layer:
    """One end point of the conv stack: a conv layer (``convB_I``) or the pool closing block ``B`` (``poolB``)."""

    name: str
    kind: str  # "conv" or "pool"
    block: int
    in_channels: int
    channels: int
    #: Downsampling relative to the input: 2 ** (pools before it, itself included for a pool).
    reduction: int


@dataclass(frozen=True)
class ArchCfg:
    """A VGG conv stack: the output widths of the conv layers of each of its five blocks."""

    name: str
    block_widths: tuple
    mean_bgr: tuple = VGG_MEAN_BGR
    min_input_side: int = MIN_INPUT_SIDE

    @cached_property
    def layers(self) -> tuple:
        """Every end point in graph order (conv layers and pools) as :class:`Layer`."""
        out, c_in = [], 3
        for b, widths in enumerate(self.block_widths, start=1):
            reduction = 2 ** (b - 1)
            for i, c_out in enumerate(widths, start=1):
                out.append(Layer(f"conv{b}_{i}", "conv", b, c_in, c_out, reduction))
                c_in = c_out
            out.append(Layer(f"pool{b}", "pool", b, c_in, c_in, reduction * 2))
        return tuple(out)

    @cached_property
    def by_name(self) -> dict:
        """``{end point name: Layer}``."""
        return {layer.name: layer for layer in self.layers}

    def layer(self, end_point: str) -> Layer:
        """The :class:`Layer` called ``end_point``; ValueError naming the valid ones otherwise."""
        try:
            return self.by_name[end_point]
        except KeyError:
            raise ValueError(
                f"unknown end point {end_point!r} for {self.name}; expected one of {', '.join(self.end_points)}"
            ) from None

    @property
    def end_points(self) -> tuple:
        """Every end point name in graph order."""
        return tuple(layer.name for layer in self.layers)

    @property
    def conv_layers(self) -> tuple:
        """The conv layer names in order (conv1_1 ... conv5_3 / conv5_4)."""
        return tuple(layer.name for layer in self.layers if layer.kind == "conv")

    @property
    def feature_info(self) -> list:
        """timm's ``feature_info``: the end of each block (its pool) with channels and reduction."""
        return [
            {"module": layer.name, "num_chs": layer.channels, "reduction": layer.reduction}
            for layer in self.layers
            if layer.kind == "pool"
        ]

    def blocks(self) -> list:
        """``[[(name, c_in, c_out), ...] per block]``: the conv layers grouped by block."""
        return [
            [
                (layer.name, layer.in_channels, layer.channels)
                for layer in self.layers
                if layer.kind == "conv" and layer.block == b
            ]
            for b in range(1, len(self.block_widths) + 1)
        ]

    def weight_shapes(self) -> dict:
        """``{layer: (W shape, b shape)}`` for every layer a full weight file may hold (conv HWIO, and fc6-fc8)."""
        shapes: dict = {
            layer.name: ((3, 3, layer.in_channels, layer.channels), (layer.channels,))
            for layer in self.layers
            if layer.kind == "conv"
        }
        shapes["fc6"] = ((7 * 7 * 512, 4096), (4096,))
        shapes["fc7"] = ((4096, 4096), (4096,))
        shapes["fc8"] = ((4096, 1000), (1000,))
        return shapes

    def layers_up_to(self, end_point: str) -> tuple:
        """The conv layers a graph up to ``end_point`` reads weights for."""
        last = self.end_points.index(self.layer(end_point).name)
        return tuple(n for n in self.conv_layers if self.end_points.index(n) <= last)

    def output_side(self, end_point: str, side: int) -> int:
        """The side of ``end_point``'s map for an input side ``side`` ('SAME' convs keep it, each 2x2 pool floors)."""
        return side // self.layer(end_point).reduction


_CFGS = {
    "vgg16": ArchCfg("vgg16", ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))),
    "vgg19": ArchCfg("vgg19", ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))),
}

#: The registered architectures, in order.
ARCHITECTURES = tuple(_CFGS)


def get_cfg(arch: str) -> ArchCfg:
    """The :class:`ArchCfg` of ``arch``; ValueError naming the known architectures otherwise."""
    try:
        return _CFGS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}") from None


def detect_architecture(layer_names) -> str:
    """The registered architecture a set of weight layer names belongs to: the one with the most conv layers all of
    whose layers beyond the shared VGG16 ones are present (a fourth conv in a block means VGG19), else 'vgg16'."""
    names = set(layer_names)
    best = "vgg16"
    for arch, cfg in _CFGS.items():
        extra = set(cfg.conv_layers) - set(_CFGS["vgg16"].conv_layers)
        if extra and extra & names and len(cfg.conv_layers) > len(_CFGS[best].conv_layers):
            best = arch
    return best


def layers_needed(arch: str, end_point: str) -> tuple:
    """The conv layers of ``arch`` that a graph up to ``end_point`` reads weights for."""
    return get_cfg(arch).layers_up_to(end_point)


def conv_blocks(arch: str) -> list:
    """``[[(name, c_in, c_out), ...] per block]`` for ``arch``."""
    return get_cfg(arch).blocks()


def conv_layer_names(arch: str) -> tuple:
    """The conv layer names of ``arch`` in order (conv1_1 ... conv5_3/conv5_4)."""
    return get_cfg(arch).conv_layers


def end_point_names(arch: str = "vgg16") -> tuple:
    """Every end point of ``arch`` in graph order (conv layers and pools)."""
    return get_cfg(arch).end_points


def end_point_channels(arch: str = "vgg16") -> dict:
    """The output channels of every end point of ``arch``."""
    return {layer.name: layer.channels for layer in get_cfg(arch).layers}


def end_point_stride(end_point: str, arch: str = "vgg16") -> int:
    """Spatial downsampling of an end point relative to the input (pool1: 2 ... pool5: 32; convK_i: 2**(K-1))."""
    return get_cfg(arch).layer(end_point).reduction


def expected_shapes(arch: str) -> dict:
    """``{layer: (W shape, b shape)}`` for every layer a full file of ``arch`` may hold (conv and fc)."""
    return get_cfg(arch).weight_shapes()


def feature_info(arch: str) -> list:
    """timm-style ``feature_info`` of ``arch`` (see :attr:`ArchCfg.feature_info`)."""
    return get_cfg(arch).feature_info


__all__ = [
    "ArchCfg",
    "Layer",
    "ARCHITECTURES",
    "VGG_MEAN_BGR",
    "MIN_INPUT_SIDE",
    "POOLINGS",
    "get_cfg",
    "conv_blocks",
    "detect_architecture",
    "layers_needed",
    "conv_layer_names",
    "end_point_names",
    "end_point_channels",
    "end_point_stride",
    "expected_shapes",
    "feature_info",
]

"""What a block feature row holds (:class:`FeatureSpec`), its named blocks and their normalisation; TensorFlow-free
(the CLI and the defaults table read it without importing TensorFlow). :mod:`vggtransfer.features.blocks` computes it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from vggtransfer.nets.cfg import MIN_INPUT_SIDE, conv_blocks, end_point_channels, end_point_names  # noqa: F401

BLOCK_POOLINGS = ("avg", "max")
PREPROCESSING = (
    "RGB [0,1] via images.prepare (view mode, bilinear, reducing_gap 3) -> x255, RGB->BGR, "
    "minus [103.939,116.779,123.68]"
)


@dataclass(frozen=True)
class FeatureSpec:
    """What a feature row holds: ``end_points`` x ``poolings`` blocks at each of ``scales``.

    ``view='whole'``: the whole image, short side resized to each scale Q (no crop; the VGG paper's protocol).
    ``view='crop'``: the centred square resized to Q x Q (the classic 224 px crop). ``flip`` averages each block
    with that of the mirrored view.
    """

    end_points: tuple = ("pool3", "pool4", "pool5")
    poolings: tuple = ("avg", "max")
    scales: tuple = (256,)
    view: str = "whole"
    flip: bool = False

    def __post_init__(self):
        object.__setattr__(self, "end_points", tuple(self.end_points))
        object.__setattr__(self, "poolings", tuple(self.poolings))
        object.__setattr__(self, "scales", tuple(int(q) for q in self.scales))
        if not self.end_points:
            raise ValueError("a feature spec needs at least one end point")
        if not self.poolings or any(p not in BLOCK_POOLINGS for p in self.poolings):
            raise ValueError(f"poolings must be a non-empty subset of {BLOCK_POOLINGS}, got {self.poolings}")
        if len(set(self.poolings)) != len(self.poolings) or len(set(self.end_points)) != len(self.end_points):
            raise ValueError(f"end points and poolings must not repeat: {self.end_points}, {self.poolings}")
        if not self.scales or any(q < MIN_INPUT_SIDE for q in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales must be distinct sizes of at least {MIN_INPUT_SIDE} px, got {self.scales}")
        if self.view not in ("whole", "crop"):
            raise ValueError(f"view must be 'whole' or 'crop', got {self.view!r}")

    @classmethod
    def classic(cls, end_point: str, pooling: str, size: int) -> "FeatureSpec":
        """One block of the square centre crop: the classic single-end-point feature (what ``FeatureExtractor``
        computes with a global pooling)."""
        return cls(end_points=(end_point,), poolings=(pooling,), scales=(size,), view="crop")

    def check(self, arch: str) -> None:
        """Raise ValueError naming an end point that ``arch`` does not have."""
        names = end_point_names(arch)
        for ep in self.end_points:
            if ep not in names:
                raise ValueError(f"unknown end point {ep!r} for {arch}; expected one of {', '.join(names)}")

    def deepest(self, arch: str) -> str:
        """The last end point of the graph (where the conv stack can stop)."""
        names = end_point_names(arch)
        return max(self.end_points, key=names.index)

    def blocks(self, arch: str) -> list:
        """``[(name, start, stop), ...]``: the named column ranges of a feature row."""
        channels = end_point_channels(arch)
        out, start = [], 0
        for q in self.scales:
            for ep in self.end_points:
                for p in self.poolings:
                    out.append((block_name(ep, p, q), start, start + channels[ep]))
                    start += channels[ep]
        return out

    def dim(self, arch: str) -> int:
        """Length of a feature row."""
        return self.blocks(arch)[-1][2]

    def describe(self) -> str:
        """One line naming the blocks and scales (printed once by ``train``, ``extract`` and the main job)."""
        view = "whole image" if self.view == "whole" else "centre crop"
        flip = ", averaged with the mirror image" if self.flip else ""
        return (
            f"features: {'+'.join(self.end_points)} {'+'.join(self.poolings)}, {view} at "
            f"{'+'.join(map(str, self.scales))} px{flip}"
        )

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        """A spec from :meth:`to_dict` output; unknown fields are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown feature spec fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def block_name(end_point: str, pooling: str, scale: int) -> str:
    """``pool5.avg@256``."""
    return f"{end_point}.{pooling}@{scale}"


def parse_block_name(name: str) -> tuple:
    """``'pool5.avg@256'`` -> ``('pool5', 'avg', 256)``."""
    try:
        head, scale = name.split("@")
        ep, pooling = head.split(".")
        return ep, pooling, int(scale)
    except ValueError:
        raise ValueError(f"not a block name: {name!r} (expected e.g. 'pool5.avg@256')") from None


def normalise_blocks(features: np.ndarray, blocks, power: float = 0.5) -> np.ndarray:
    """Per block: signed power normalisation (``power``; 1 = none) then L2 normalisation. Returns float32."""
    x = np.asarray(features, np.float64)
    out = np.empty_like(x)
    for _, a, b in blocks:
        v = x[:, a:b]
        if power != 1:
            v = np.sign(v) * np.abs(v) ** power
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        out[:, a:b] = v / np.maximum(norm, 1e-12)
    return out.astype(np.float32)


__all__ = [
    "FeatureSpec",
    "block_name",
    "parse_block_name",
    "normalise_blocks",
    "end_point_names",
    "end_point_channels",
    "PREPROCESSING",
]

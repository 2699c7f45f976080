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
    with that of the mirrored view. ``mirror`` keeps the mirror image's blocks instead, as a second half of the row
    (the photo's blocks at every scale, then the mirror image's, in the same order): a model trains on both halves
    as rows of their own (feature-level augmentation) and averages its predictions over them.
    """

    end_points: tuple = ("pool3", "pool4", "pool5")
    poolings: tuple = ("avg", "max")
    scales: tuple = (256,)
    view: str = "whole"
    flip: bool = False
    mirror: bool = False

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
        if self.flip and self.mirror:
            raise ValueError(
                "flip (average with the mirror image) and mirror (keep it as rows of its own) exclude each other"
            )

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
        """``[(name, start, stop), ...]``: the named column ranges of a feature row (of its first half, the photo's,
        where ``mirror`` adds the mirror image's: :meth:`mirror_blocks`)."""
        channels = end_point_channels(arch)
        out, start = [], 0
        for q in self.scales:
            for ep in self.end_points:
                for p in self.poolings:
                    out.append((block_name(ep, p, q), start, start + channels[ep]))
                    start += channels[ep]
        return out

    @property
    def runs_mirrored(self) -> bool:
        """Each view also runs mirrored: ``flip`` averages the two, ``mirror`` keeps both."""
        return self.flip or self.mirror

    def mirror_blocks(self, arch: str) -> list:
        """The same names as :meth:`blocks`, at the columns of the mirror image's half of the row (``mirror``)."""
        if not self.mirror:
            raise ValueError("this feature spec keeps no mirror image (mirror=False)")
        half = self.blocks(arch)[-1][2]
        return [(n, a + half, b + half) for n, a, b in self.blocks(arch)]

    def views(self, arch: str) -> list:
        """The block column ranges of each view a row holds: ``[blocks(arch)]``, and :meth:`mirror_blocks` after
        it where ``mirror``. A model scores each and averages."""
        return [self.blocks(arch)] + ([self.mirror_blocks(arch)] if self.mirror else [])

    def dim(self, arch: str) -> int:
        """Length of a feature row."""
        return self.blocks(arch)[-1][2] * (2 if self.mirror else 1)

    def describe(self) -> str:
        """One line naming the blocks and scales (printed once by ``train``, ``extract`` and the main job)."""
        view = "whole image" if self.view == "whole" else "centre crop"
        flip = ", averaged with the mirror image" if self.flip else (", and its mirror image" if self.mirror else "")
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


#: Rows of a feature matrix taken at a time wherever the package works on it in float64: :func:`normalise_blocks`,
#: the solvers' sums (:mod:`vggtransfer.models.solvers`), the Dense head's input standardisation. Its work space
#: stays 4,096 x 7,680 numbers = 240 MiB however many rows there are.
CHUNK_ROWS = 4096


def normalise_blocks(features, blocks, power: float = 0.5, *, only=None, chunk_rows: int | None = None):
    """Per block: signed power normalisation (``power``; 1 = none) then L2 normalisation. Returns float32.

    ``only``: the names of the blocks to return, in that order (the others are not computed). ``features`` is any 2-D
    array-like that slices by rows (an ndarray, or :class:`vggtransfer.data.store.StoreRows` reading a store on
    demand); it is read and normalised ``chunk_rows`` rows (default :data:`CHUNK_ROWS`) at a time, so the
    work space stays small and a set larger than memory needs room only for the blocks returned. Each row's result is
    the same whatever the chunking."""
    where = {n: (a, b) for n, a, b in blocks}
    keep = [where[n] for n in (only if only is not None else [name for name, _, _ in blocks])]
    n, chunk_rows = len(features), max(1, int(chunk_rows or CHUNK_ROWS))
    out = np.empty((n, sum(b - a for a, b in keep)), np.float32)
    for r0 in range(0, n, chunk_rows):
        x = np.asarray(features[r0 : r0 + chunk_rows], np.float64)
        c = 0
        for a, b in keep:
            v = x[:, a:b]
            if power != 1:
                v = np.sign(v) * np.abs(v) ** power
            norm = np.linalg.norm(v, axis=1, keepdims=True)
            out[r0 : r0 + len(x), c : c + b - a] = v / np.maximum(norm, 1e-12)
            c += b - a
    return out


__all__ = [
    "FeatureSpec",
    "block_name",
    "parse_block_name",
    "normalise_blocks",
    "CHUNK_ROWS",
    "end_point_names",
    "end_point_channels",
    "PREPROCESSING",
]

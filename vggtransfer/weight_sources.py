"""Where VGG weights come from (placeholder until the sources module lands): explicit path, env, cache."""

from __future__ import annotations

import os
from pathlib import Path

from .weights import WeightsError


def resolve_weights(path=None, arch: str = "vgg16", cache_dir=None, download: bool = True, progress: bool = True):
    if path is not None:
        if not Path(path).is_file():
            raise WeightsError(path, "no such file")
        return Path(path)
    env = os.environ.get("VGGTRANSFER_WEIGHTS")
    if env:
        return resolve_weights(env, arch)
    cached = Path(cache_dir or "weights") / f"{arch}_conv_imagenet.npy"
    if cached.is_file():
        return cached
    raise WeightsError(cached, "no weights found")

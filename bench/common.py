"""Shared helpers for the benchmark scripts: environment record, medians, result files, weights/data paths."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED = Path(os.environ.get("VGGTRANSFER_SHARED", REPO.parent / "shared"))
if not SHARED.exists():
    SHARED = Path("/work/shared")
WEIGHTS = Path(os.environ.get("VGGTRANSFER_BENCH_WEIGHTS", SHARED / "weights" / "vgg16_conv_imagenet.npy"))
TIGER_CAT = SHARED / "data" / "morvan_tiger_kittycat" / "data"
HYMENOPTERA = SHARED / "data" / "hymenoptera" / "hymenoptera_data"
SIGNS = SHARED / "data" / "signs" / "64x64_SIGNS"


#: VGG16 conv stack FLOPs per image (2 x MACs of the 13 convs) at a square input side.
def vgg16_conv_flops(side: int) -> float:
    from vggtransfer.weights.npy import conv_blocks

    flops, s = 0.0, side
    for block in conv_blocks("vgg16"):
        for _, c_in, c_out in block:
            flops += 2.0 * s * s * 9 * c_in * c_out
        s //= 2
    return flops


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment() -> dict:
    import numpy as np

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "loadavg_start": loadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }
    try:
        from vggtransfer.core.tf import tf  # the quiet import: no C++ notices in a bench's output

        env["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return env


def write_results(path, result: dict, script: str, argv=None) -> Path:
    """Write a bench's ``result`` to ``path`` (JSON, atomically) with the machine it ran on (``env``, unless the bench
    recorded it already) and the command that reproduces it (``python bench/SCRIPT ARGS``)."""
    result.setdefault("env", environment())
    result["command"] = f"python bench/{Path(script).name} " + " ".join(argv or sys.argv[1:])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return path


def time_v(stderr: str) -> dict:
    """Peak RSS (MiB) and wall time (s) from the report of ``/usr/bin/time -v`` at the end of ``stderr``."""
    import re

    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", stderr).group(1)
    return {
        "peak_rss_mib": rss_kb / 1024,
        "wall_s": sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":")))),
    }


def jpeg_round_trip(array, quality: int):
    """A uint8 RGB array after a round trip through a PIL JPEG at ``quality`` (uint8 RGB)."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result.setdefault("env", {})["loadavg_end"] = loadavg()
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    return path


def fmt_env(env: dict) -> str:
    return (
        f"{env['date']}, {env['cpu']} ({env['cores']} cores), TF {env.get('tensorflow', '-')}, "
        f"load average {env['loadavg_start']} -> {env.get('loadavg_end', '?')}"
    )


def quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def add_features_option(parser) -> None:
    """``--features default|amx``: the model's default block features, or the three scales 112+224+320 px for every
    task (once the AMX CPUs' default for classes, now every CPU's; for targets the set measured against one scale)."""
    parser.add_argument(
        "--features",
        choices=("default", "amx"),
        default="default",
        help="the block features: the default, or 112+224+320 px for every task (targets too)",
    )


def chosen_features(args):
    """The FeatureSpec ``--features`` asks for (None: the model's own default)."""
    from vggtransfer.models.defaults import FEATURES_CLASSES

    return FEATURES_CLASSES if args.features == "amx" else None


def results_file(name: str, args) -> Path:
    """``bench/results/NAME.json``, or ``NAME_amx_features.json`` with ``--features amx``."""
    return RESULTS / (f"{name}.json" if args.features == "default" else f"{name}_amx_features.json")


def features_key(model, what: str) -> str:
    """What a cached feature file must match to be reused: the items (``what``), the feature spec, the precision and
    the conv weights' fingerprint (builds the model's extractor)."""
    from vggtransfer.core.runtime import describe_precision

    sha = model.attach().config["weights_sha256"]
    return f"{what}|{model.features_spec.describe()}|{describe_precision('auto')}|{sha}"


def load_cached(path, key: str) -> dict | None:
    """The arrays :func:`save_cached` wrote at ``path`` under the same ``key`` (``--cache`` of the benches, to
    re-measure a change to selection without extracting again), else None."""
    import numpy as np

    if path is None or not Path(path).exists():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "key"} if str(z["key"]) == key else None


def save_cached(path, key: str, **arrays) -> None:
    """Write ``arrays`` and ``key`` to ``path`` (.npz) atomically."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, key=key, **arrays)
    os.replace(tmp, path)


def cached(path, key: str, compute) -> dict:
    """The arrays cached at ``path`` under ``key`` (``--cache``: an earlier run's features and their extraction time,
    to re-measure a change to selection without extracting again), else ``compute()``'s dict of arrays, saved there
    when ``path`` is given."""
    z = load_cached(path, key)
    if z is None:
        z = compute()
        if path is not None:
            save_cached(path, key, **z)
    return z

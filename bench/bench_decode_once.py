"""Multi-scale features from files: one decode per photo for all its views, against one decode per view.

The classes' default features take three views of each photo (the whole photo at 112, 224 and 320 px). Until
commit "images: load_views", each view decoded the file again; now one decode serves every view
(:func:`vggtransfer.data.images.load_views`), with the same pixels. Decoding grows with the photo's size while the
views' conv cost does not, so the gain is largest for camera photos: measured here on the first ``--photos`` ant/bee
photos as they are (about 500 x 375, web photos) and re-encoded at 4,000 x 3,000 (12 megapixels, JPEG quality 90,
what a phone camera writes), with the default ``BlockExtractor`` (classes' features, precision auto).

Both loaders run through the same extractor and pipeline (``iter_views``: decode threads a window ahead of the conv
stack), interleaved (A B, then B A), ``--reps`` repetitions; the figures are medians, the ratio per repetition. The
features of the two loaders are compared for equality.

    python bench/bench_decode_once.py [--photos 120] [--reps 5] [--out bench/results/decode_once.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import HYMENOPTERA, RESULTS, WEIGHTS, environment, median, quiet_tf, write_results  # noqa: E402


def camera_copies(paths, folder: Path, size=(4000, 3000)) -> list:
    """12-megapixel JPEG copies (bicubic upscale, quality 90) of ``paths`` in ``folder``."""
    from PIL import Image

    out = []
    for p in paths:
        dst = folder / Path(p).name
        with Image.open(p) as img:
            img.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(dst, "JPEG", quality=90)
        out.append(str(dst))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=120)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--out", type=Path, default=RESULTS / "decode_once.json")
    args = p.parse_args(argv)
    quiet_tf()
    import numpy as np

    from vggtransfer.data.images import list_images, load_image
    from vggtransfer.features.blocks import BlockExtractor
    from vggtransfer.models.defaults import FEATURES_CLASSES

    env = environment()
    web = [str(f) for f in list_images(HYMENOPTERA / "train", recursive=True)[: args.photos]]
    ex = BlockExtractor(args.weights, spec=FEATURES_CLASSES)
    scales, view = ex.spec.scales, ex.spec.view

    def per_view(path):  # the previous loader: each view decodes the file again
        return [load_image(path, q, mode=view) for q in scales]

    loaders = {"one decode per view (before)": per_view, "one decode per photo (now)": ex.views_of_file}
    result = {"env": env, "features": ex.spec.describe(), "precision": ex.precision, "photos": len(web), "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"web photos (ants/bees, ~500 x 375)": web, "camera photos (the same at 4000 x 3000)": None}
        t0 = time.perf_counter()
        sets["camera photos (the same at 4000 x 3000)"] = camera_copies(web, Path(tmp))
        print(f"made {len(web)} 12-megapixel copies in {time.perf_counter() - t0:.0f} s", flush=True)
        ex.extract_paths(web[:4], progress=False)  # warm-up: graph, oneDNN kernels
        for name, paths in sets.items():
            for f in paths:  # in the page cache for both loaders alike
                Path(f).read_bytes()
            times = {k: [] for k in loaders}
            feats = {}
            for rep in range(args.reps):
                order = list(loaders) if rep % 2 == 0 else list(reversed(loaders))
                for key in order:
                    t = time.perf_counter()
                    out = ex._collect(ex.iter_views(paths, loaders[key]), len(paths), False, "")
                    times[key].append(time.perf_counter() - t)
                    feats[key] = out[0]
            a, b = (feats[k] for k in loaders)
            before, now = (times[k] for k in loaders)
            row = {
                "seconds": {k: v for k, v in times.items()},
                "images_per_s": {k: len(paths) / median(v) for k, v in times.items()},
                "speedup_median": median([x / y for x, y in zip(before, now)]),
                "features_equal": bool(np.array_equal(a, b)),
            }
            result["sets"][name] = row
            print(
                f"{name}: {row['images_per_s']['one decode per view (before)']:.2f} -> "
                f"{row['images_per_s']['one decode per photo (now)']:.2f} img/s, "
                f"{row['speedup_median']:.2f}x, features equal: {row['features_equal']}",
                flush=True,
            )
    ex.close()
    print(write_results(args.out, result, __file__, argv))


if __name__ == "__main__":
    main()

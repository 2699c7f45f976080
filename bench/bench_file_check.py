"""The data sets' file check before extraction: each file's header read (``images.check_image``, what
``from_folder``/``from_csv`` do now) against each file decoded at 32 px (``load_image(path, 32)``, what they did
before), on the same files, alternating, medians of ``--reps`` runs; also the whole ``from_folder`` call.

    python bench/bench_file_check.py [--data DIR] [--reps 5] [--name file_check_amx]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, TIGER_CAT, median, write_results  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=TIGER_CAT, help="a folder of class folders (default: tiger/cat)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--name", default="file_check", help="results file bench/results/NAME.json")
    args = p.parse_args(argv)

    from vggtransfer.data.datasets import from_folder
    from vggtransfer.data.images import check_image, list_images, load_image

    paths = [f for d in sorted(args.data.iterdir()) if d.is_dir() for f in list_images(d)]
    ways = {"header": lambda f: check_image(f), "decode_32px": lambda f: load_image(f, 32)}
    times: dict = {k: [] for k in ways}
    folder_s = []
    for rep in range(args.reps):
        order = list(ways) if rep % 2 == 0 else list(reversed(ways))
        for name in order:
            t = time.perf_counter()
            for f in paths:
                ways[name](f)
            times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        n = len(from_folder(args.data))
        folder_s.append(time.perf_counter() - t)
    result = {
        "files": len(paths),
        "data": str(args.data),
        "reps": args.reps,
        "seconds": {k: median(v) for k, v in times.items()},
        "seconds_each_run": times,
        "ms_per_file": {k: 1000 * median(v) / len(paths) for k, v in times.items()},
        "decode_over_header": median(times["decode_32px"]) / median(times["header"]),
        "from_folder_seconds": median(folder_s),
        "from_folder_items": n,
    }
    path = write_results(RESULTS / f"{args.name}.json", result, __file__, argv)
    print(
        f"{len(paths)} files: header {result['seconds']['header']:.3f} s, decode at 32 px "
        f"{result['seconds']['decode_32px']:.3f} s ({result['decode_over_header']:.1f}x); from_folder "
        f"{result['from_folder_seconds']:.3f} s -> {path}"
    )


if __name__ == "__main__":
    main()

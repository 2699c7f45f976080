"""Download the tutorial's two ImageNet URL lists (tiger, kittycat) into data/tiger/ and data/kittycat/.

    python examples/download_imagenet_urls.py                      # lists from --lists or GitHub, into data/
    python examples/download_imagenet_urls.py --lists /work/shared/data/morvan_tiger_kittycat --max-per-class 400

The lists are imagenet_tiger.txt and imagenet_kittycat.txt of MorvanZhou/Tensorflow-Tutorial
(tutorial-contents/for_transfer_learning/). With --lists DIR the local copies are used; otherwise they are fetched
from the repository's raw URL into DATA/lists/. Rerun the same command to continue an interrupted run; every URL's
outcome is in DATA/manifest.jsonl. Many of these 2009-era Flickr URLs are dead or serve placeholders today.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RAW = "https://raw.githubusercontent.com/MorvanZhou/Tensorflow-Tutorial/master/tutorial-contents/for_transfer_learning/"
CLASSES = {"tiger": "imagenet_tiger.txt", "kittycat": "imagenet_kittycat.txt"}


def fetch_lists(folder: Path, base_url: str = RAW, timeout=(5, 30)) -> dict:
    """Fetch the two list files from ``base_url`` into ``folder`` (once, atomically), returning ``{class: path}``.
    Through the library's HTTP session (retries with backoff on connection errors and 5xx)."""
    from vggtransfer.core.http import make_session

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    with make_session() as session:
        for cls, name in CLASSES.items():
            path = folder / name
            if not path.exists():
                url = base_url.rstrip("/") + "/" + name
                resp = session.get(url, timeout=timeout)
                resp.raise_for_status()
                tmp = path.with_name(f".{name}.part")
                tmp.write_bytes(resp.content)
                tmp.replace(path)
            paths[cls] = path
    return paths


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from vggtransfer.cli.common import non_negative_int, positive_int
    from vggtransfer.data.download import download_url_lists

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data", help="output root (default data/): DATA/tiger/, DATA/kittycat/")
    ap.add_argument("--lists", help="folder holding imagenet_tiger.txt and imagenet_kittycat.txt (else fetched)")
    ap.add_argument("--lists-url", default=RAW, help="where the two lists are fetched from (default: the tutorial's)")
    ap.add_argument(
        "--max-per-class", type=non_negative_int, default=400, help="valid images per class (tutorial: 400)"
    )
    ap.add_argument("--workers", type=positive_int, default=16, help="parallel downloads (default 16)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (none is drawn off a terminal)")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if args.lists:
        paths = {cls: Path(args.lists) / name for cls, name in CLASSES.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            print(f"error: missing URL list(s): {', '.join(missing)}", file=sys.stderr)
            return 2
    else:
        try:
            paths = fetch_lists(data / "lists", args.lists_url)
        except Exception as exc:  # noqa: BLE001 - report any network failure plainly
            print(
                f"error: could not fetch the URL lists from {args.lists_url} ({exc}); pass --lists DIR", file=sys.stderr
            )
            return 2
    try:
        summary = download_url_lists(
            paths, data, max_per_class=args.max_per_class, workers=args.workers, progress=not args.no_progress
        )
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue", file=sys.stderr)
        return 130
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())

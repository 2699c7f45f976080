"""The ``vggtransfer download`` subcommand: URL list files -> OUT/<class>/ images + OUT/manifest.jsonl."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vggtransfer.cli.common import EXIT_INTERRUPTED, RESUMABLE, error, non_negative_int, positive_int, progress
from vggtransfer.data.images import MAX_PIXELS

DESCRIPTION = """\
Download image URL lists, one folder per list. Each URLS_FILE holds one URL per line (blank lines and # comments
are skipped); its stem names the class: tiger.txt -> OUT/tiger/. Every body is checked before it is kept (it must
decode as an image; HTML, truncated, oversized, placeholder and duplicate bodies are rejected) and every URL's outcome
is appended to OUT/manifest.jsonl. Rerunning the same command continues where the last run stopped."""


def _timeout(text):
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS or CONNECT,READ seconds, got {text!r}") from None
    if len(parts) not in (1, 2) or any(p <= 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected SECONDS or CONNECT,READ seconds > 0, got {text!r}")
    return (parts[0], parts[-1]) if len(parts) == 2 else (min(parts[0], 5.0), parts[0])


def _megabytes(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected megabytes, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected megabytes > 0, got {text!r}")
    return int(value * 1024 * 1024)


def add_download_parser(subparsers, parents=()):
    """Register ``download`` on an argparse ``subparsers`` object; returns the subparser."""
    p = subparsers.add_parser(
        "download",
        parents=list(parents),
        help="download image URL lists into OUT/<class>/ (resumable)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("urls_files", nargs="+", metavar="URLS_FILE", help="text file of URLs; its stem is the class name")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (images go to DIR/<class>/)")
    p.add_argument(
        "--max-per-class",
        type=positive_int,
        metavar="N",
        help="stop once N valid images are saved for a class (the tutorial used 400)",
    )
    p.add_argument("--workers", type=positive_int, default=16, help="concurrent downloads in all (default 16)")
    p.add_argument("--per-host", type=positive_int, default=4, help="concurrent downloads per host (default 4)")
    p.add_argument(
        "--timeout",
        type=_timeout,
        default=(5.0, 20.0),
        metavar="CONNECT,READ",
        help="connect and read timeouts in seconds (default 5,20)",
    )
    p.add_argument(
        "--retries", type=non_negative_int, default=2, help="retries for connection errors and 5xx (default 2)"
    )
    p.add_argument(
        "--max-mb",
        type=_megabytes,
        default=20 * 1024 * 1024,
        dest="max_bytes",
        metavar="MB",
        help="largest body kept, in MB (default 20)",
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=MAX_PIXELS,
        help=f"largest image kept, width*height (default {MAX_PIXELS:,})",
    )
    p.add_argument(
        "--placeholder-urls",
        type=positive_int,
        default=3,
        dest="placeholder_min_urls",
        metavar="N",
        help="content served for N or more URLs is a placeholder (default 3)",
    )
    p.add_argument("--manifest", metavar="FILE", help="manifest path (default OUT/manifest.jsonl)")
    p.add_argument("--no-progress", action="store_true", dest="quiet", help=argparse.SUPPRESS)  # old name of --quiet
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Run the download subcommand; returns the exit code (0 done, 1 nothing valid saved, 2 usage, 130 Ctrl-C)."""
    from vggtransfer.data.download import download_url_lists, read_url_list

    lists: dict = {}
    seen: dict = {}
    for name in args.urls_files:
        path = Path(name)
        cls = path.stem
        try:
            urls = read_url_list(path)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            return error(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
        except OSError as exc:
            return error(f"{path}: cannot read ({exc})")
        if not cls or cls.startswith(".") or cls in seen:
            why = f"same class name as {seen[cls]}" if cls in seen else "unusable class name"
            return error(f"{path}: {why} ({cls!r}); rename the file (its stem names the class folder)")
        seen[cls] = path
        if urls.invalid and not urls:
            lineno, text, why = urls.invalid[0]
            return error(
                f"{path}: none of its {len(urls.invalid)} lines is an http(s) URL (line {lineno}: {why}: "
                f"{text[:60]!r}); expected one image URL per line"
            )
        for lineno, text, why in urls.invalid[:5]:
            print(f"warning: {path}:{lineno}: {why}: {text[:80]}", file=sys.stderr)
        if len(urls.invalid) > 5:
            print(f"warning: {path}: {len(urls.invalid) - 5} more invalid lines", file=sys.stderr)
        lists[cls] = urls
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return error(f"{out}: exists and is not a folder")
    try:
        summary = download_url_lists(
            lists,
            out,
            max_per_class=args.max_per_class,
            workers=args.workers,
            per_host=args.per_host,
            timeout=args.timeout,
            retries=args.retries,
            max_bytes=args.max_bytes,
            max_pixels=args.max_pixels,
            placeholder_min_urls=args.placeholder_min_urls,
            manifest=args.manifest,
            progress=progress(args),
        )
    except KeyboardInterrupt as exc:
        partial = getattr(exc, "summary", None)
        if partial is not None:
            print(partial.format(), file=sys.stderr)
        print(RESUMABLE, file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError) as exc:
        return error(str(exc))
    summary.invalid_lines = sum(len(u.invalid) for u in lists.values())
    print(summary.format())
    return 0 if summary.saved or not summary.total else 1

"""What every ``vggtransfer`` command shares: one error convention, argument types that name the option, the common
options (``--quiet``, ``--verbose``), and the runtime options.

The convention: a handler returns its exit code (0 success, 1 some items failed); any bad argument, path, model,
weights file or data set raises a ``ValueError``/``OSError`` subclass whose message names it, and :func:`run`
prints it as one ``error: ...`` line (exit 2), never a traceback. Ctrl-C prints one line (exit 130). Argparse's own
errors (unknown option, a value of the wrong type) also exit 2 naming the option. Nothing here imports TensorFlow:
arguments and paths are checked before a command pays for it.
"""

from __future__ import annotations

import argparse
import codecs
import io
import math
import os
import sys
import traceback
from pathlib import Path

from vggtransfer.core.env import ENV_VERBOSE, PRECISIONS
from vggtransfer.data.images import ENV_MAX_PIXELS, MAX_PIXELS
from vggtransfer.nets.cfg import MIN_INPUT_SIDE

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Printed on Ctrl-C unless the command sets its own ``interrupted`` message.
RESUMABLE = "interrupted; rerun the same command to continue"


class UsageError(ValueError):
    """A combination of options that cannot work; the message names the options."""


# --- argument types (argparse reports their ArgumentTypeError as "argument --name: message", exit 2) --------------
def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bounded(kind, accept, expected: str, doc: str):
    """An argparse type: a number of ``kind`` for which ``accept(value)`` holds, else "expected {expected}"."""

    def parse(text):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__doc__ = doc
    return parse


positive_int = _bounded(int, lambda v: v >= 1, "a whole number >= 1", "An integer >= 1.")
non_negative_int = _bounded(int, lambda v: v >= 0, "a whole number >= 0", "An integer >= 0.")
positive_float = _bounded(float, lambda v: v > 0, "a number > 0", "A finite number > 0.")
non_negative_float = _bounded(float, lambda v: v >= 0, "a number >= 0", "A finite number >= 0.")
fraction = _bounded(float, lambda v: 0 <= v < 1, "a number in [0, 1)", "A number in [0, 1).")
image_size = _bounded(
    int,
    lambda v: v >= MIN_INPUT_SIDE,
    f"a side of at least {MIN_INPUT_SIDE} pixels",
    f"An input side in pixels, >= {MIN_INPUT_SIDE} (VGG's five 2x2 poolings).",
)


#: What ``--png`` may be named (matplotlib writes each by its suffix).
PICTURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def picture_file(text) -> Path:
    """A picture file name: ends in one of :data:`PICTURE_SUFFIXES` (else matplotlib would refuse it after the work,
    or add .png to a folder's name)."""
    path = Path(text)
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"expected a picture file name ending in {', '.join(PICTURE_SUFFIXES)}, got {text!r}"
        )
    return path


def check_output_file(path: Path, option: str, protect=()) -> None:
    """A file the command will write, checked before any work: not an existing folder, not inside (or one of) the
    ``protect`` paths (the data and the model the command reads), and its folder exists or can be made (made now)."""
    from vggtransfer.models.modeldir import overlapping

    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; expected a file name")
    clash = overlapping(Path(os.path.abspath(path)), protect)
    if clash is not None:
        raise UsageError(f"{option} {path}: inside {clash}, which this command reads; write it elsewhere")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create its folder {path.parent} ({exc.strerror or exc})") from None


def scales(text) -> tuple:
    """Comma-separated image scales in pixels, each >= 32 ('224', '256,384')."""
    out = []
    for part in text.split(","):
        try:
            q = int(part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated sizes in pixels like 224 or 256,384, got {text!r}"
            ) from None
        if q < MIN_INPUT_SIDE:
            raise argparse.ArgumentTypeError(f"scales must be >= {MIN_INPUT_SIDE} px (five 2x2 poolings), got {text!r}")
        out.append(q)
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"scales must not repeat, got {text!r}")
    return tuple(out)


_ANNOUNCED: set = set()


def announce(args, line: str) -> None:
    """Print ``line`` once per process (stderr; not with --quiet)."""
    if not getattr(args, "quiet", False) and line not in _ANNOUNCED:
        print(line, file=sys.stderr)
    _ANNOUNCED.add(line)


def announce_precision(args, spec=None) -> None:
    """Say once per process what ``--precision`` resolves to on this CPU, and the block features ``spec`` when given
    (stderr; not with --quiet)."""
    from vggtransfer.core.runtime import describe_precision

    announce(args, describe_precision(args.precision))
    if spec is not None:
        announce(args, spec.describe())


def hidden_sizes(text) -> tuple:
    """Comma-separated positive layer sizes ('256', '512,128'); '' or 'none' for no hidden layer."""
    if text.strip().lower() in ("", "none"):
        return ()
    sizes = []
    for part in text.split(","):
        try:
            size = int(part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated layer sizes like 256 or 512,128 ('' for none), got {text!r}"
            ) from None
        if size < 1:
            raise argparse.ArgumentTypeError(f"layer sizes must be >= 1, got {text!r}")
        sizes.append(size)
    return tuple(sizes)


# --- shared options -----------------------------------------------------------------------------------------------
def common_options() -> argparse.ArgumentParser:
    """The options every command takes (a parent parser): --quiet and --verbose."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars (they are shown only on a terminal in any case)"
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show TensorFlow's own notices, and a traceback for an internal error",
    )
    return p


def add_runtime_args(p) -> None:
    """--batch-size, --threads, --precision and --max-pixels: how to run, never what is computed."""
    g = p.add_argument_group("runtime")
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="images per conv batch (default: chosen by input size, 16 at 224 px)",
    )
    g.add_argument(
        "--threads", type=positive_int, default=None, help="TensorFlow intra-op threads (default: all cores)"
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (the default): bf16 where the CPU runs it natively (AMX-BF16 or AVX512-BF16), else "
        "fp32, said once on stderr; bf16: convolutions in bfloat16 via oneDNN (2x to 7x faster on "
        "those CPUs), falling back to fp32 with a warning elsewhere",
    )
    g.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        help=f"largest image decoded, width*height (a decompression bomb guard; default "
        f"{MAX_PIXELS:,}, or ${ENV_MAX_PIXELS})",
    )


def add_data_args(p, help_text: str, *, required: bool) -> None:
    """DATA as a positional argument or as ``--data DATA``, the spelling ``train`` takes, so a user who trained with
    ``--data`` can type the same to ``extract`` and ``evaluate``. :func:`run` merges the two into ``args.data``."""
    p.add_argument("data", nargs="?", help=help_text)
    p.add_argument("--data", dest="data_option", metavar="DATA", help="DATA given as an option (the same as DATA)")
    p.set_defaults(data_required=required)


def merge_data_args(args) -> None:
    """Put ``--data`` into ``args.data``; a UsageError when both spellings name different data, or when DATA is
    required and neither gives it."""
    option = getattr(args, "data_option", None)
    if option is not None:
        if args.data is not None and args.data != option:
            raise UsageError(f"DATA given twice ({args.data} and --data {option}); give it once")
        args.data = option
    if getattr(args, "data_required", False) and args.data is None:
        raise UsageError("give the data set: DATA (a folder of class folders, an .h5 or a .csv) or --data DATA")


def add_scale_out_args(p, workers_help: str) -> None:
    """The "scale-out" option group of ``extract`` and ``predict``: ``--workers N``, ``--ray [ADDRESS]`` and
    ``--shard-size`` (one definition, so both commands read them alike)."""
    g = p.add_argument_group("scale-out")
    g.add_argument("--workers", type=positive_int, default=None, help=workers_help)
    g.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the workers as Ray actors: no ADDRESS starts a local Ray, 'auto' joins a running "
        "cluster (`ray start --head`), or HOST:PORT (needs pip install 'vggtransfer[ray]')",
    )
    g.add_argument(
        "--shard-size", type=positive_int, default=None, help="items per shard with --workers/--ray (default 256)"
    )


def check_weights_option(args) -> None:
    """A ``--weights`` file given is checked now, from its header (milliseconds, no array read, nothing
    downloaded), so that a wrong file is named before the data set is scanned rather than after."""
    if getattr(args, "weights", None) is not None:
        from vggtransfer.weights.sources import resolve_weights

        resolve_weights(args.weights)


def explicit(args, name: str) -> bool:
    """True when the user gave option ``name`` (options whose default is None)."""
    return getattr(args, name, None) is not None


def progress(args) -> bool | None:
    """The library's ``progress`` argument for this run: off with --quiet, else a bar only on a terminal."""
    return False if getattr(args, "quiet", False) else None


def report_bad(ds, args, label: str = "") -> None:
    """One ``skipped NAME: reason`` line per unusable item of a data set, a ``note:`` line per note, and (unless
    ``--quiet``) one line saying what was found, on stderr, before any feature is paid for."""
    for b in ds.bad:
        print(f"skipped {label}{b}", file=sys.stderr)
    for note in ds.notes:
        print(f"note: {note}", file=sys.stderr)
    if not getattr(args, "quiet", False):
        print(f"{label}data: {ds.source}: {ds.summary()}", file=sys.stderr)


def _file_name_bytes(exc: UnicodeError) -> tuple:
    """Codec error handler: the bytes of a file name that are not UTF-8 (Python's surrogate escapes, U+DC80-U+DCFF)
    written as ``\\xff``, as the name's bytes on disk; anything else as ``backslashreplace`` writes it."""
    if isinstance(exc, UnicodeEncodeError):
        chunk = exc.object[exc.start : exc.end]
        if all(0xDC80 <= ord(c) <= 0xDCFF for c in chunk):
            return "".join(f"\\x{ord(c) - 0xDC00:02x}" for c in chunk), exc.end
    return codecs.backslashreplace_errors(exc)


FILE_NAME_BYTES = "vggtransfer.file_name_bytes"
codecs.register_error(FILE_NAME_BYTES, _file_name_bytes)


def terminal_streams() -> None:
    """Make stdout and stderr print any text: a file name that is not valid UTF-8 shows its bytes as ``\\xff``
    (not ``\\udcff``), and a character the terminal's encoding lacks never stops a command with an encoding
    error."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=FILE_NAME_BYTES)


def shown(text) -> str:
    """``text`` with the bytes of a file name that are not UTF-8 written as ``\\xff`` (what
    :func:`terminal_streams` prints), for output that is not written through those streams' encoding."""
    return str(text).encode("utf-8", FILE_NAME_BYTES).decode("utf-8")


def error(message: str) -> int:
    """Print ``error: message`` on stderr; returns the usage exit code."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args) -> int:
    """Run a parsed command under the one error convention (see the module doc). ``--verbose`` and
    ``--max-pixels`` are passed to the library (and to worker processes) as environment variables for the
    duration of the command only."""
    settings = {}
    if getattr(args, "verbose", False):
        settings[ENV_VERBOSE] = "1"
    if getattr(args, "max_pixels", None) is not None and args.command != "download":
        settings[ENV_MAX_PIXELS] = str(args.max_pixels)
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        return _run(args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _column_advice(args, other_task: str | None) -> str:
    """What to do about a CSV whose columns suit the other task, in the command's terms."""
    if other_task is None:
        return ""
    if args.command == "evaluate":
        kind, wants = ("classifier", "class labels (a 'label' column)")
        if other_task == "classification":
            kind, wants = ("regressor", "numeric targets (a 'target' column)")
        return f"; {args.model} is a {kind}, scored on {wants}"
    if other_task == "regression":
        return "; for regression give --task regression"
    return "; for classification leave out --task regression"


def _run(args) -> int:
    try:
        merge_data_args(args)
        return args.func(args)
    except KeyboardInterrupt:
        print(getattr(args, "interrupted", RESUMABLE), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyError as exc:
        return error(f"missing {exc}")
    except (ValueError, OSError) as exc:  # ModelError, DatasetError, WeightsError, ImageError... are ValueErrors
        # data.datasets.MissingColumnError names the task its CSV suits (read by attribute: importing the data
        # layer here would add its imports to every command's start-up, --help included)
        return error((str(exc) or type(exc).__name__) + _column_advice(args, getattr(exc, "other_task", None)))
    except Exception as exc:  # an internal error: one line, the traceback only with --verbose
        if getattr(args, "verbose", False):
            traceback.print_exc()
        return error(
            f"internal error ({type(exc).__name__}: {exc}); rerun with --verbose for the traceback and please report it"
        )

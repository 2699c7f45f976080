"""Progress bars for people: shown on a terminal, never written into a log file.

Every bar in the package is made here. ``progress`` is ``None`` (the default everywhere: a bar when standard error
is a terminal, nothing otherwise), ``True`` (the same: a bar is never forced into a pipe, where its carriage-return
updates would flood the file) or ``False`` (no bar; the CLI's ``--quiet``).
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def bar(iterable=None, *, progress: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar on standard error that shows only on a terminal (see the module doc); ``kwargs`` go to tqdm."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.2)
    # tqdm's disable=None means: disabled when the output is not a terminal.
    return tqdm(iterable, disable=True if progress is False else None, **kwargs)


def shown(progress: bool | None = None) -> bool:
    """Whether progress would be shown under the module doc's rule: not ``False`` and standard error a terminal.
    For progress the package does not draw itself (pip's, in a subprocess)."""
    if progress is False:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = ["bar", "shown"]

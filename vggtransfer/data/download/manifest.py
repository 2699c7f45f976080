"""The manifest (``manifest.jsonl``, one JSON line per outcome, appended and flushed as it happens), the outcome
statuses, and the run summary."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

MANIFEST_NAME = "manifest.jsonl"

STATUSES = {
    "saved": "downloaded, validated and saved in this run",
    "kept": "saved by an earlier run; the file is still there and unchanged",
    "duplicate": "same content as another saved URL (stored once; 'path' names that file)",
    "placeholder": "a 'photo unavailable' image: identical content served for many URLs, or a tiny image",
    "dead": "HTTP 4xx (not found, gone, forbidden, ...): not retried",
    "server_error": "HTTP 5xx (or 429) after retries",
    "unreachable": "could not connect (DNS, refused, connect timeout), or the host was marked dead",
    "timeout": "the server stopped sending (read timeout) after retries",
    "truncated": "the connection closed before the whole body arrived",
    "not_image": "the body is not an image (HTML, text, empty, unknown format, corrupt)",
    "too_large": "the body is over max_bytes or the image is over max_pixels",
    "bad_redirect": "redirect loop, too many redirects, or a redirect to a non-HTTP URL",
    "invalid_url": "not an http(s) URL",
    "skipped": "not kept: this class already has max_per_class images",
    "error": "unexpected error (see reason)",
}
#: Outcomes that a rerun tries again; the others are final.
TRANSIENT = frozenset({"server_error", "unreachable", "timeout", "truncated", "skipped", "error"})


# ---------------------------------------------------------------------------------------------------------- manifest
def read_manifest(path) -> dict:
    """The latest record per ``(class, url)`` in a manifest file (later lines override earlier ones).

    A torn last line (the process was killed while writing it) is ignored.
    """
    return {(rec.get("class", ""), rec["url"]): rec for rec in _all_manifest_records(Path(path))}


def _all_manifest_records(path: Path):
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "url" in rec and "status" in rec:
                yield rec


# ----------------------------------------------------------------------------------------------------------- summary
@dataclasses.dataclass
class DownloadSummary:
    """What a run did. ``counts`` maps each outcome in :data:`STATUSES` to a number of URLs."""

    counts: dict
    per_class: dict
    manifest: Path
    out_dir: Path
    elapsed_s: float
    total: int
    files: list
    invalid_lines: int = 0
    interrupted: bool = False

    @property
    def saved(self) -> int:
        """Valid images present after the run (saved now + kept from earlier runs)."""
        return self.counts.get("saved", 0) + self.counts.get("kept", 0)

    def format(self) -> str:
        """A one-paragraph human summary of the run (saved, failed, skipped counts)."""
        order = [s for s in STATUSES if self.counts.get(s)]
        parts = ", ".join(f"{self.counts[s]} {s}" for s in order) or "nothing to do"
        lines = [f"{self.total} URLs in {self.elapsed_s:.1f} s: {parts}"]
        if len(self.per_class) > 1 or any(self.per_class):
            for cls, counts in self.per_class.items():
                have = counts.get("saved", 0) + counts.get("kept", 0)
                lines.append(f"  {cls or '.'}: {have} images ({', '.join(f'{v} {k}' for k, v in counts.items())})")
        if self.invalid_lines:
            lines.append(f"  {self.invalid_lines} lines of the URL lists are not http(s) URLs (left out)")
        lines.append(f"manifest: {self.manifest}")
        if self.interrupted:
            lines.append("interrupted: rerun the same command to continue")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

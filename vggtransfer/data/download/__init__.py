"""Download image URL lists into folders you can trust and rerun.

What the tutorial's ``urlretrieve`` loop left to the user, done here:

* a bounded thread pool (``workers``) with a per-host limit (``per_host``), connect/read timeouts, and retries with
  backoff for connection errors and 5xx/429 (urllib3 ``Retry``; never for other 4xx);
* every body is validated before it is kept: it must decode as an image (:func:`vggtransfer.data.images.decode_image_bytes`),
  be under ``max_bytes`` and ``max_pixels``, and not be a placeholder ("photo unavailable" images that hosts serve with
  status 200: the same content for ``placeholder_min_urls`` or more URLs, or a tiny image). The original bytes are
  kept, nothing is converted;
* file names come from the URL but are sanitised and always land inside the output folder; two URLs with the same
  last segment get distinct names; identical content is stored once;
* resumable: a file only appears under its final name once complete (``.name.part`` + rename), every outcome is
  appended to ``manifest.jsonl`` and flushed as it happens, and a rerun skips what is done and retries what failed
  transiently (timeouts, unreachable hosts, 5xx, truncated bodies);
* a host that fails to connect ``host_failure_limit`` times (after retries) is marked dead: its remaining URLs are
  classified ``unreachable`` without being tried, so a list of dead hosts ends promptly.
"""

from vggtransfer.data.download.fetch import DEFAULT_MAX_BYTES, make_session
from vggtransfer.data.download.manifest import MANIFEST_NAME, STATUSES, TRANSIENT, DownloadSummary, read_manifest
from vggtransfer.data.download.scheduler import DownloadOptions, download_images, download_url_lists
from vggtransfer.data.download.urls import UrlList, read_url_list, safe_name

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DownloadOptions",
    "DownloadSummary",
    "MANIFEST_NAME",
    "STATUSES",
    "TRANSIENT",
    "UrlList",
    "download_images",
    "download_url_lists",
    "make_session",
    "read_manifest",
    "read_url_list",
    "safe_name",
]

"""The one HTTP session factory: ``requests`` + urllib3 retries, used by the image downloader and the weight fetcher."""

from __future__ import annotations

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


class _Retry(Retry):
    """urllib3 Retry that gives up at once when a host name does not resolve (a rerun tries again).

    Retrying DNS failures only multiplies resolver timeouts: a list with hundreds of dead hosts would take minutes.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, urllib3.exceptions.NameResolutionError):
            raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def make_session(
    *,
    connections: int = 10,
    retries: int = 2,
    read_retries: int | None = None,
    backoff: float = 0.25,
    backoff_max: float = 4.0,
    retry_statuses=(429, *range(500, 600)),
    respect_retry_after: bool = False,
    max_redirects: int = 30,
    user_agent: str | None = None,
    accept: str | None = None,
) -> requests.Session:
    """A ``requests`` session with ``connections`` pooled connections per host and urllib3 retries.

    Connection errors and the ``retry_statuses`` replies to GET/HEAD are retried ``retries`` times (read errors
    ``read_retries``, default the same) with exponential backoff from ``backoff`` seconds up to ``backoff_max``;
    other 4xx are never retried, nor are host names that do not resolve. ``respect_retry_after=False`` ignores
    Retry-After headers, so a hostile server cannot stall a run. Redirects are followed by requests (up to
    ``max_redirects``), not by the retry layer.
    """
    retry = _Retry(
        total=None,
        connect=retries,
        read=retries if read_retries is None else read_retries,
        status=retries,
        other=0,
        redirect=False,
        allowed_methods=frozenset({"GET", "HEAD"}),
        status_forcelist=frozenset(retry_statuses),
        backoff_factor=backoff,
        backoff_max=backoff_max,
        raise_on_status=False,
        respect_retry_after_header=respect_retry_after,
    )
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=max(16, connections), pool_maxsize=max(1, connections), max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = max_redirects
    if user_agent:
        session.headers["User-Agent"] = user_agent
    if accept:
        session.headers["Accept"] = accept
    return session


__all__ = ["make_session"]

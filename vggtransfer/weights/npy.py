# mypy: disable-error-code="attr-defined,arg-type,assignment,call-overload"
# (the restricted unpickler extends pickle._Unpickler, whose private internals typeshed does not describe)
"""VGG weight files in the vgg16.npy / vgg19.npy layout: safe loading, validation, atomic saving.

The layout (machrisaa/tensorflow-vgg) is a ``.npy`` file holding a pickled dict ``{layer: [W, b]}`` with W in HWIO
order for conv layers (``(3, 3, C_in, C_out)``) and ``(in, out)`` for fc layers, BGR input, 0..255 scale, the VGG
mean subtracted. A full file also has fc6-fc8; a conv-only file has the 13 (VGG16) or 16 (VGG19) conv layers.

``np.load(..., allow_pickle=True)`` would run whatever code the pickle names. This module never does that: a
restricted unpickler admits only dicts, lists, tuples, strings, numbers and numpy arrays/dtypes/scalars, and refuses
any other global with :class:`WeightsError`. It is also lazy: array payloads are recorded as (offset, length) in
the file and only the layers the graph needs are read, so a 553 MB full vgg16.npy costs memory only for its 59 MB
of conv weights.

The module is over 400 lines because the restricted unpickler, the lazy array records it builds and the reader that
materialises them are one security boundary, kept in one file to be read together.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np

from vggtransfer.nets.cfg import (  # noqa: F401
    ARCHITECTURES,
    VGG_MEAN_BGR,
    conv_blocks,
    conv_layer_names,
    detect_architecture,
    expected_shapes,
    get_cfg,
)


class WeightsError(ValueError):
    """A weights file that cannot be used. ``path`` names the file; the message says what was found and expected."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# --------------------------------------------------------------------------------------------------------------------
# Restricted, lazy unpickling.

#: Payloads at least this long are not read during unpickling, only located.
_LAZY_MIN_BYTES = 1 << 16


class _Blob:
    """A byte payload left in the file: ``length`` bytes at ``offset``."""

    __slots__ = ("offset", "length")

    def __init__(self, offset: int, length: int):
        self.offset, self.length = offset, length


class _LazyArray:
    """Stands in for an ndarray during unpickling; ``__setstate__`` receives numpy's (version, shape, dtype, ...)."""

    __slots__ = ("shape", "dtype", "fortran", "data")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("ndarray state is not a numpy array state")
        if len(state) == 5:
            state = state[1:]
        shape, dtype, fortran, data = state
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError("array dtype is not a numpy dtype")
        if dtype.hasobject and not isinstance(data, list):
            raise pickle.UnpicklingError("object array without a list of items")
        if not dtype.hasobject and not isinstance(data, (bytes, str, _Blob)):
            raise pickle.UnpicklingError(f"array data is a {type(data).__name__}; expected bytes")
        self.shape, self.dtype, self.fortran, self.data = tuple(int(s) for s in shape), dtype, bool(fortran), data


def _reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY_MARKER:
        raise pickle.UnpicklingError("_reconstruct is only allowed for numpy.ndarray")
    return _LazyArray()


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("only numeric numpy scalars are allowed")
    if isinstance(data, str):
        data = data.encode("latin1")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _frombuffer(buf, dtype, shape, order):
    """Protocol 5 pickles an ndarray as ``numpy._core.numeric._frombuffer(buffer, dtype, shape, order)``."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("_frombuffer is only allowed for numeric dtypes")
    if isinstance(buf, (bytearray, memoryview)):
        buf = bytes(buf)
    lazy = _LazyArray()
    lazy.__setstate__((1, shape, dtype, order == "F", buf))
    return lazy


def _codecs_encode(text, encoding="latin1"):
    """Python 3 pickles ``bytes`` at protocol 2 as ``_codecs.encode(str, 'latin1')``; allow exactly that."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed as encode(str, 'latin1')")
    return text.encode("latin1")


_NDARRAY_MARKER = object()
_ALLOWED = {
    ("numpy", "ndarray"): _NDARRAY_MARKER,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("__builtin__", "dict"): dict,
    ("__builtin__", "list"): list,
}


_REDUCIBLE = (_reconstruct, _scalar, _frombuffer, _codecs_encode, np.dtype, dict, list, tuple)


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcode table can be extended
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, encoding="latin1"):
        super().__init__(file, encoding=encoding)
        self._raw = file

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load global {module}.{name}: a weights file may hold only dicts, lists, numbers, "
                "strings and numpy arrays"
            ) from None

    def _payload(self, length: int, as_str: bool):
        if length >= _LAZY_MIN_BYTES and self._unframer.current_frame is None:
            offset = self._raw.tell()
            self._raw.seek(length, io.SEEK_CUR)
            return _Blob(offset, length)
        data = self.read(length)
        if len(data) != length:
            raise EOFError("pickle data was truncated")
        return self._decode_string(data) if as_str else data

    def _load_sized(fmt_len, as_str):
        def load(self):
            length = int.from_bytes(self.read(fmt_len), "little", signed=(fmt_len == 4 and as_str))
            if length < 0:
                raise pickle.UnpicklingError("negative byte count")
            self.append(self._payload(length, as_str))

        return load

    dispatch[pickle.BINSTRING[0]] = _load_sized(4, True)
    dispatch[pickle.SHORT_BINSTRING[0]] = _load_sized(1, True)
    dispatch[pickle.BINBYTES[0]] = _load_sized(4, False)
    dispatch[pickle.SHORT_BINBYTES[0]] = _load_sized(1, False)
    dispatch[pickle.BINBYTES8[0]] = _load_sized(8, False)
    dispatch[pickle.BYTEARRAY8[0]] = _load_sized(8, False)  # protocol 5 in-band array data
    del _load_sized

    def _refused(self):
        raise pickle.UnpicklingError("refused: the file uses a pickle opcode that builds arbitrary objects")

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is allowed for allowed in _REDUCIBLE):  # identity: `in` would call an array's __eq__
            raise pickle.UnpicklingError("refused: REDUCE on a callable that is not allowed")
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, _LazyArray):
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            inst.__setstate__(state)
        else:
            raise pickle.UnpicklingError(f"refused: BUILD on a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = load_build

    for _op in (
        pickle.INST,
        pickle.OBJ,
        pickle.NEWOBJ,
        pickle.NEWOBJ_EX,
        pickle.PERSID,
        pickle.BINPERSID,
        pickle.EXT1,
        pickle.EXT2,
        pickle.EXT4,
    ):
        dispatch[_op[0]] = _refused
    del _op


def _read_npy_header(fh, path):
    head = fh.read(6)
    fh.seek(0)
    if head != b"\x93NUMPY":
        start = fh.read(64)
        fh.seek(0)
        if not start:
            raise WeightsError(path, "file is empty; expected a .npy file holding a pickled dict {layer: [W, b]}")
        low = start.lstrip().lower()
        if low.startswith((b"<!doctype", b"<html", b"<?xml", b"<head")):
            raise WeightsError(
                path, "file is an HTML page, not a .npy weights file (a download that returned an error or login page?)"
            )
        if start.startswith(b"\x89HDF"):
            raise WeightsError(path, "file is HDF5 (Keras .h5?), not .npy; convert it with `vggtransfer convert`")
        raise WeightsError(
            path, f"not a .npy file (first bytes {start[:8].hex(' ')}); expected the numpy magic \\x93NUMPY"
        )
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:  # 3.0 is only written for structured dtypes with non-latin1 field names, never for a weights dict
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}; expected 1.0 or 2.0")
    except Exception as exc:  # numpy parses the header with ast/tokenize: SyntaxError, TokenError, ValueError...
        raise WeightsError(path, f"corrupt .npy header ({type(exc).__name__}: {exc})") from None
    if not dtype.hasobject or shape != ():
        raise WeightsError(
            path,
            f"holds a plain {dtype} array of shape {shape}; expected a pickled dict "
            "{layer: [W, b]} (vgg16.npy layout)",
        )


def _read_header_dict(path: Path) -> tuple:
    """Unpickle the file's dict with arrays left lazy. Returns (dict, file size)."""
    if not path.exists():
        raise WeightsError(path, "no such file")
    if path.is_dir():
        raise WeightsError(path, "is a directory; expected a .npy weights file")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        _read_npy_header(fh, path)
        try:
            obj = _RestrictedUnpickler(fh).load()
        except pickle.UnpicklingError as exc:
            raise WeightsError(path, f"unsafe or corrupt pickle: {exc}") from None
        except (EOFError, struct.error, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsError(path, f"file is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    # np.save pickles a 0-d object array whose one item is the dict; its items were built by the unpickler above.
    if isinstance(obj, _LazyArray) and obj.dtype.hasobject and obj.shape == () and len(obj.data) == 1:
        obj = obj.data[0]
    if not isinstance(obj, dict):
        raise WeightsError(path, f"pickle holds a {type(obj).__name__}; expected a dict {{layer: [W, b]}}")
    return obj, size


def _materialise(path: Path, fh, lazy, size: int, what: str) -> np.ndarray:
    if isinstance(lazy, np.ndarray):
        return lazy
    if not isinstance(lazy, _LazyArray) or lazy.dtype.hasobject:
        kind = "object array" if isinstance(lazy, _LazyArray) else type(lazy).__name__
        raise WeightsError(path, f"{what} is a {kind}; expected a float32 numpy array")
    count = int(np.prod(lazy.shape, dtype=np.int64))
    nbytes = count * lazy.dtype.itemsize
    data = lazy.data
    if isinstance(data, _Blob):
        if data.offset + data.length > size:
            raise WeightsError(
                path,
                f"file is truncated: {what} needs bytes up to {data.offset + data.length:,} but the file has {size:,}",
            )
        if data.length != nbytes:
            raise WeightsError(
                path, f"{what}: payload is {data.length:,} bytes, shape {lazy.shape} {lazy.dtype} needs {nbytes:,}"
            )
        fh.seek(data.offset)
        arr = np.fromfile(fh, dtype=lazy.dtype, count=count)
        if arr.size != count:
            raise WeightsError(path, f"file is truncated inside {what}")
    else:
        if isinstance(data, str):
            data = data.encode("latin1")
        if len(data) != nbytes:
            raise WeightsError(path, f"{what}: payload is {len(data):,} bytes, shape {lazy.shape} needs {nbytes:,}")
        arr = np.frombuffer(data, dtype=lazy.dtype, count=count).copy()
    order = "F" if lazy.fortran else "C"
    arr = arr.reshape(lazy.shape, order=order)
    return np.ascontiguousarray(arr)


def load_weights(path, layers=None, arch: str | None = None) -> dict:
    """Load and validate ``{layer: (W, b)}`` from a vgg16.npy / vgg19.npy file, reading only ``layers``.

    ``layers`` defaults to the conv layers of ``arch``; ``arch`` defaults to what the file holds. Every requested
    layer must be present, float32, with the shapes of ``expected_shapes(arch)``; anything else raises
    :class:`WeightsError` naming the file and the layer.
    """
    path = Path(path)
    obj, size = _read_header_dict(path)
    if arch is None:
        arch = detect_architecture(obj)
    shapes = expected_shapes(arch)
    if layers is None:
        layers = conv_layer_names(arch)
    out = {}
    with open(path, "rb") as fh:
        for name in layers:
            if name not in shapes:
                raise ValueError(f"unknown {arch} layer {name!r}; expected one of {', '.join(shapes)}")
            if name not in obj:
                present = ", ".join(sorted(map(str, obj))) or "none"
                raise WeightsError(
                    path,
                    f"layer {name} is missing (the file has: {present}); a {arch} weights file "
                    f"needs {', '.join(layers)}",
                )
            entry = obj[name]
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise WeightsError(
                    path,
                    f"layer {name} should be [W, b], found {type(entry).__name__}"
                    + (f" of length {len(entry)}" if isinstance(entry, (list, tuple)) else ""),
                )
            pair = []
            for what, lazy, want in (("W", entry[0], shapes[name][0]), ("b", entry[1], shapes[name][1])):
                arr = _materialise(path, fh, lazy, size, f"{name} {what}")
                if arr.shape != want:
                    raise WeightsError(path, f"{name} {what} has shape {arr.shape}, expected {want} for {arch}")
                if arr.dtype != np.float32:
                    raise WeightsError(path, f"{name} {what} has dtype {arr.dtype}, expected float32")
                if not np.isfinite(arr).all():
                    raise WeightsError(path, f"{name} {what} contains NaN or infinite values")
                pair.append(arr)
            out[name] = tuple(pair)
    return out


def weights_architecture(weights) -> str:
    """The architecture a weight file (from its header alone, no array read) or an in-memory dict holds."""
    if isinstance(weights, (str, os.PathLike)):
        return detect_architecture(list_layers(weights))
    return detect_architecture(weights)


def load_conv_weights(weights, arch: str | None = None, end_point: str = "pool5") -> tuple:
    """``(arch, {layer: (W, b)}, layers)``: the conv weights a graph of ``arch`` up to ``end_point`` needs, from a
    weight file (only those layers are read) or an in-memory dict. ``arch`` defaults to what the weights hold (a
    file's header is read without its arrays)."""
    if arch is None:
        arch = weights_architecture(weights)
    path = None
    if isinstance(weights, (str, os.PathLike)):
        path, weights = str(weights), None
    layers = list(get_cfg(arch).layers_up_to(end_point))
    if weights is None:
        weights = load_weights(path, layers=layers, arch=arch)
    return arch, weights, layers


def list_layers(path) -> dict:
    """``{layer: (W shape, b shape)}`` of what a weights file holds, without reading any array data."""
    path = Path(path)
    obj, _ = _read_header_dict(path)
    found = {}
    for name, entry in obj.items():
        if isinstance(entry, (list, tuple)) and len(entry) == 2:
            found[name] = tuple(getattr(e, "shape", None) for e in entry)
    return found


def save_weights(weights: dict, path) -> Path:
    """Write ``{layer: (W, b)}`` as a vgg16.npy-layout file, atomically (temp file + rename)."""
    path = Path(path)
    payload = {name: [np.asarray(w, np.float32), np.asarray(b, np.float32)] for name, (w, b) in weights.items()}
    arr = np.empty((), dtype=object)
    arr[()] = payload
    return atomic_write(path, lambda fh: np.save(fh, arr, allow_pickle=True))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write) -> Path:
    """Call ``write(fh)`` on a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would have
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


_SHA_CACHE: dict = {}


def file_sha256(path) -> str:
    """sha256 of a file (cached per path, size and mtime within the process)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def weights_digest(weights: dict) -> str:
    """sha256 of the values of ``{layer: (W, b)}`` (names, dtypes, shapes, C-order bytes), independent of how the
    file was pickled: two files with equal digests hold bit-identical arrays, whatever numpy version wrote them."""
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode() + b"\0")
        for arr in weights[name]:
            arr = np.ascontiguousarray(arr)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()

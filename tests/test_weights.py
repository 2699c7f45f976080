"""vggtransfer.weights.npy: the safe, lazy vgg16.npy loader."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess

import numpy as np
import pytest
from conftest import random_weights

from vggtransfer.weights import npy as W
from vggtransfer.weights.npy import WeightsError, list_layers, load_weights, save_weights

OBJ_HEADER = {"descr": "|O", "fortran_order": False, "shape": ()}


def write_npy_pickle(path, pickled: bytes):
    """A .npy file with the 0-d object-array header followed by ``pickled`` (what np.save writes for a dict)."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, OBJ_HEADER)
        fh.write(pickled)
    return path


def as_object_array(payload):
    arr = np.empty((), dtype=object)
    arr[()] = payload
    return arr


def assert_same(a: dict, b: dict):
    assert list(a) == list(b)
    for name in a:
        for x, y in zip(a[name], b[name]):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


# --------------------------------------------------------------------------------------------------------------------
# Good files.


def test_round_trip(vgg16_npy, vgg16_weights):
    loaded = load_weights(vgg16_npy)
    assert_same(loaded, vgg16_weights)
    assert list_layers(vgg16_npy) == {n: (w.shape, b.shape) for n, (w, b) in vgg16_weights.items()}
    # what np.load would give (the file is a plain np.save of the dict)
    assert list(np.load(vgg16_npy, allow_pickle=True).item()) == list(vgg16_weights)


def test_reads_only_requested_layers(vgg16_npy, vgg16_weights, monkeypatch):
    read = []
    real_fromfile = np.fromfile
    monkeypatch.setattr(
        W.np, "fromfile", lambda fh, dtype, count: read.append(count) or real_fromfile(fh, dtype, count)
    )
    loaded = load_weights(vgg16_npy, layers=["conv1_2", "conv5_3"])
    assert list(loaded) == ["conv1_2", "conv5_3"]
    assert_same(loaded, {k: vgg16_weights[k] for k in loaded})
    # only the kernels (>= 64 KB) are left lazy in the file; biases are inline. Nothing else was read.
    assert read == [3 * 3 * 64 * 64, 3 * 3 * 512 * 512]


def test_atomic_save_leaves_no_temp_and_normal_mode(tmp_path):
    out = save_weights(random_weights(layers=["conv1_1"]), tmp_path / "a.npy")
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_protocols(tmp_path, protocol):
    ref = random_weights(layers=["conv1_1", "conv1_2"])  # conv1_1 stays inline, conv1_2 (147 KB) is lazy
    payload = {k: [w, b] for k, (w, b) in ref.items()}
    path = write_npy_pickle(tmp_path / "p.npy", pickle.dumps(as_object_array(payload), protocol=protocol))
    assert_same(load_weights(path, layers=list(ref)), ref)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), as a Python 2 numpy did: the original vgg16.npy style."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_str2(self, obj: bytes):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_str2


def test_python2_style_pickle(tmp_path):
    ref = random_weights(layers=["conv1_1", "conv1_2"])
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(as_object_array({k: [w, b] for k, (w, b) in ref.items()}))
    data = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # a numpy 1.x name
    assert b"_codecs" not in data and pickle.BINSTRING in data
    path = write_npy_pickle(tmp_path / "py2.npy", data)
    assert_same(load_weights(path, layers=list(ref)), ref)


# --------------------------------------------------------------------------------------------------------------------
# Malicious files: refused, payload never runs.


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker):
    cmd = f"touch {marker}"
    return {
        "os.system": _Evil(os.system, cmd),
        "eval": _Evil(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess": _Evil(subprocess.check_call, ["touch", str(marker)]),
        "exec-in-dict": {"conv1_1": [_Evil(exec, f"open({str(marker)!r}, 'w').close()"), np.zeros(64, np.float32)]},
    }


@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess", "exec-in-dict"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_pickle_refused(tmp_path, kind, protocol):
    marker = tmp_path / "PWNED"
    payload = _payloads(marker)[kind]
    path = write_npy_pickle(tmp_path / "evil.npy", pickle.dumps(as_object_array(payload), protocol=protocol))
    with pytest.raises(WeightsError, match="refused|unsafe"):
        load_weights(path)
    with pytest.raises(WeightsError):
        list_layers(path)
    assert not marker.exists()


def test_malicious_raw_pickle_refused(tmp_path):
    """A pickle without the numpy header (np.load would still unpickle it with allow_pickle=True)."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npy"
    path.write_bytes(pickle.dumps(_Evil(os.system, f"touch {marker}")))
    with pytest.raises(WeightsError, match="not a .npy"):
        load_weights(path)
    assert not marker.exists()


def test_hand_written_opcodes_refused(tmp_path):
    marker = tmp_path / "PWNED"
    # protocol 0 INST opcode: instantiate os.system-like callables without GLOBAL+REDUCE
    inst = b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."
    # GLOBAL of an allowed name, then REDUCE with a non-ndarray "class" argument
    reconstruct = b"cnumpy.core.multiarray\n_reconstruct\n(cos\nsystem\n(I0\ntS'b'\ntR."
    codecs = b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR."
    for i, data in enumerate((inst, reconstruct, codecs)):
        path = write_npy_pickle(tmp_path / f"op{i}.npy", data)
        with pytest.raises(WeightsError, match="refused|unsafe"):
            load_weights(path)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------------------
# Broken files: clear errors naming the file.


def test_missing_layer(tmp_path, vgg16_weights):
    partial = {k: v for k, v in vgg16_weights.items() if k != "conv5_3"}
    path = save_weights(partial, tmp_path / "partial.npy")
    with pytest.raises(WeightsError, match="conv5_3 is missing") as info:
        load_weights(path)
    assert info.value.path == str(path)


def test_wrong_shape(tmp_path):
    bad = random_weights(layers=["conv1_1"])
    bad["conv1_1"] = (np.zeros((3, 3, 3, 32), np.float32), np.zeros(32, np.float32))
    path = save_weights(bad, tmp_path / "shape.npy")
    with pytest.raises(WeightsError, match=r"conv1_1 W has shape \(3, 3, 3, 32\), expected \(3, 3, 3, 64\)"):
        load_weights(path, layers=["conv1_1"])


def test_wrong_dtype(tmp_path):
    w, b = random_weights(layers=["conv1_1"])["conv1_1"]
    payload = as_object_array({"conv1_1": [w.astype(np.float64), b]})
    path = tmp_path / "f64.npy"
    np.save(path, payload, allow_pickle=True)
    with pytest.raises(WeightsError, match="dtype float64, expected float32"):
        load_weights(path, layers=["conv1_1"])


def test_nan(tmp_path):
    w, b = random_weights(layers=["conv1_1"])["conv1_1"]
    b[3] = np.nan
    path = save_weights({"conv1_1": (w, b)}, tmp_path / "nan.npy")
    with pytest.raises(WeightsError, match="NaN"):
        load_weights(path, layers=["conv1_1"])


def test_truncated(tmp_path, vgg16_npy):
    data = vgg16_npy.read_bytes()
    path = tmp_path / "half.npy"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_weights(path)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML page"),
        (b"\n  <html><head><title>404</title></head></html>", "HTML page"),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "HDF5"),
        (b"PK\x03\x04garbage", "not a .npy"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': garbage", "corrupt .npy header"),
    ],
)
def test_not_a_weights_file(tmp_path, content, match):
    path = tmp_path / "weights.npy"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=match):
        load_weights(path)


def test_plain_array(tmp_path):
    path = tmp_path / "plain.npy"
    np.save(path, np.zeros((3, 3), np.float32))
    with pytest.raises(WeightsError, match="plain float32 array"):
        load_weights(path)


def test_not_a_dict(tmp_path):
    path = tmp_path / "list.npy"
    np.save(path, as_object_array([1, 2]), allow_pickle=True)
    with pytest.raises(WeightsError, match="expected a dict"):
        load_weights(path)


def test_no_such_file_and_directory(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        load_weights(tmp_path / "nope.npy")
    with pytest.raises(WeightsError, match="no such file"):
        list_layers(tmp_path / "nope.npy")
    with pytest.raises(WeightsError, match="directory"):
        load_weights(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# A full-size file (conv + fc6-fc8, 553 MB) costs only the conv layers.


class _Hole:
    """Pickles like a float32 ndarray of ``shape`` whose data is a 16-byte marker, replaced later by a file hole."""

    def __init__(self, shape, marker: bytes):
        self.shape, self.marker = shape, marker

    def __reduce__(self):
        reconstruct, args, _ = np.zeros(1, np.float32).__reduce__()
        return reconstruct, args, (1, self.shape, np.dtype(np.float32), False, self.marker)


def write_sparse_full_file(path, conv: dict):
    """A real-layout full VGG16 file: real ``conv`` arrays, fc6-fc8 payloads left as (sparse, zero) holes."""
    shapes = W.expected_shapes("vgg16")
    payload = {k: [w, b] for k, (w, b) in conv.items()}
    holes = {}
    for name in ("fc6", "fc7", "fc8"):
        pair = []
        for i, shape in enumerate(shapes[name]):
            marker = f"<hole {name} {i}>".encode().ljust(16, b".")
            holes[marker] = int(np.prod(shape)) * 4
            pair.append(_Hole(shape, marker))
        payload[name] = pair
    data = pickle.dumps(as_object_array(payload), protocol=3)  # protocol 3: no frames to fix up
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, OBJ_HEADER)
        for marker, nbytes in holes.items():
            short = pickle.SHORT_BINBYTES + bytes([16]) + marker
            before, data = data.split(short, 1)
            fh.write(before + pickle.BINBYTES + struct.pack("<I", nbytes))
            fh.seek(nbytes, os.SEEK_CUR)
        fh.write(data)
    return path


def test_full_file_loads_only_conv(tmp_path, vgg16_weights, monkeypatch):
    path = write_sparse_full_file(tmp_path / "vgg16_full.npy", vgg16_weights)
    assert path.stat().st_size > 553_000_000
    layers = list_layers(path)
    assert layers["fc6"] == ((25088, 4096), (4096,)) and layers["fc8"] == ((4096, 1000), (1000,))

    read = []
    real_fromfile = np.fromfile
    monkeypatch.setattr(
        W.np, "fromfile", lambda fh, dtype, count: read.append(count) or real_fromfile(fh, dtype, count)
    )
    conv = load_weights(path)  # default: the conv layers only
    assert_same(conv, vgg16_weights)
    assert sum(read) * 4 < 60_000_000  # the 411 MB fc6 W was never read
    fc8_w, fc8_b = load_weights(path, layers=["fc8"])["fc8"]
    assert fc8_w.shape == (4096, 1000) and not fc8_w.any()

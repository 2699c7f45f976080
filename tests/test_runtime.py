"""Runtime settings: bf16 fallback, session config, batch-size defaults, and the decode pipeline's order and errors."""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from vggtransfer.core import runtime
from vggtransfer.data.images import ImageError
from vggtransfer.features import extractor as features


def test_bf16_falls_back_to_fp32_with_a_warning_when_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no native bf16.*running in fp32"):
        assert runtime.resolve_precision("bf16") == "fp32"
    with pytest.warns(RuntimeWarning):
        config = runtime.session_config("bf16")
    assert not config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16


def test_bf16_falls_back_when_onednn_is_off(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    with pytest.warns(RuntimeWarning, match="oneDNN is switched off"):
        assert runtime.resolve_precision("bf16") == "fp32"


def test_bf16_turns_on_the_onednn_rewrite_when_available(monkeypatch):
    from tensorflow.core.protobuf import rewriter_config_pb2

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runtime.resolve_precision("bf16") == "bf16"
        config = runtime.session_config("bf16", threads=3)
    assert (
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16
        == rewriter_config_pb2.RewriterConfig.ON
    )
    assert config.intra_op_parallelism_threads == 3


def test_precision_is_validated():
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.resolve_precision("fp16")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        runtime.session_config("fp32", threads=0)


def test_session_config_defaults_to_all_cores_and_one_inter_op_pool():
    config = runtime.session_config()
    assert config.intra_op_parallelism_threads == runtime.cpu_count() >= 1
    assert config.inter_op_parallelism_threads == 1
    assert not config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16


def test_default_batch_size_keeps_pixels_per_batch():
    assert runtime.default_batch_size(224) == 16
    assert runtime.default_batch_size(64) == 128
    assert runtime.default_batch_size(128) == 64
    assert runtime.default_batch_size(448) == 4
    assert runtime.default_batch_size(32) == 128  # capped
    with pytest.raises(ValueError):
        runtime.default_batch_size(0)


def test_lowering_thread_priority_is_safe_and_per_thread():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen = []

    def work():
        runtime.lower_priority_of_this_thread(5)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the main thread is untouched
    assert seen == [min(before + 5, 19)]  # the worker thread's nice value went up by 5 (capped at 19)


def _write(tmp_path, n, size=40):
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i:02d}.png"
        Image.fromarray(np.full((size, size + i, 3), 10 * i, np.uint8)).save(p)
        paths.append(p)
    return paths


def test_image_batches_keep_order_and_report_bad_files(tmp_path):
    paths = _write(tmp_path, 11)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    paths.insert(4, bad)
    paths.append(tmp_path / "missing.png")
    seen, errors, sizes = [], [], []
    for batch, idx, errs in features.image_batches(paths, size=32, batch_size=5, workers=3, prefetch=1):
        assert batch.shape == (len(idx), 32, 32, 3) and batch.dtype == np.float32
        for row, i in zip(batch, idx):  # each row is the image of its index (value 10*k on every pixel)
            k = int(paths[i].stem[3:])
            assert np.allclose(row, 10 * k / 255.0, atol=1e-6)
        seen.extend(idx)
        errors.extend(errs)
        sizes.append(len(idx) + len(errs))
    assert seen == [i for i in range(len(paths)) if i not in (4, len(paths) - 1)]
    assert sizes == [5, 5, 3]
    assert [type(e) for e in errors] == [ImageError, ImageError]
    assert errors[0].path == str(bad) and "missing.png" in errors[1].path


def test_feature_extractor_defaults_and_files_match_memory(tmp_path):
    from conftest import random_weights

    weights = random_weights(layers=["conv1_1", "conv1_2"])
    paths = _write(tmp_path, 5, size=64)
    with features.FeatureExtractor(weights, end_point="pool1", pooling="avg", image_size=64) as fx:
        assert fx.batch_size == 128 and fx.precision == runtime.resolve_precision("auto")
        from_files, ok, errors = fx.extract_paths(paths, progress=False)
        assert ok == list(range(5)) and not errors
        from vggtransfer.data.images import load_images

        arrays, _, _ = load_images(paths, 64)
        np.testing.assert_allclose(from_files, fx.extract_arrays(arrays), rtol=1e-6)
    with features.FeatureExtractor(
        weights, end_point="pool1", pooling="avg", image_size=64, batch_size=2, threads=1
    ) as fx:
        assert fx.batch_size == 2
        np.testing.assert_allclose(fx.extract_paths(paths, progress=False)[0], from_files, rtol=1e-5)


def test_bf16_keeps_dense_layers_in_fp32(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.delenv(runtime._AMP_ALLOWLIST_REMOVE, raising=False)
    runtime.session_config("bf16")
    assert "MatMul" in os.environ[runtime._AMP_ALLOWLIST_REMOVE].split(",")
    monkeypatch.setenv(runtime._AMP_ALLOWLIST_REMOVE, "Conv2D")  # the user's own choice is kept
    runtime.session_config("bf16")
    assert os.environ[runtime._AMP_ALLOWLIST_REMOVE] == "Conv2D"


def test_a_missing_optional_package_skips_here_and_fails_in_ci(monkeypatch):
    from conftest import require_module

    monkeypatch.setenv("VGGTRANSFER_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="'no_such_package_here' is not installed"):
        require_module("no_such_package_here")
    monkeypatch.setenv("VGGTRANSFER_REQUIRE_DATA", "0")
    with pytest.raises(pytest.skip.Exception):
        require_module("no_such_package_here")
    assert require_module("json").dumps([1]) == "[1]"

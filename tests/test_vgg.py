"""The conv graph: shapes and end points, preprocessing, frozen weights, and parity with keras.applications.VGG16."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_module, scaled_weights, shared_data

from vggtransfer.data.images import load_image
from vggtransfer.nets import vgg
from vggtransfer.weights.npy import load_weights

tf1 = tf.compat.v1


def _run(weights, images, arch="vgg16", **kwargs):
    g = tf.Graph()
    with g.as_default():
        x = tf1.placeholder(tf.float32, [None, *images.shape[1:]])
        net, end_points = vgg.vgg_conv(x, weights, arch=arch, **kwargs)
        with tf1.Session(graph=g) as sess:
            vgg.initialize(sess)
            out, eps = sess.run([net, end_points], {x: images})
            trainable = [v.name for v in tf1.trainable_variables()]
    return out, eps, trainable


@pytest.fixture(scope="module")
def w16():
    return scaled_weights("vgg16")


def test_end_points_and_shapes(w16):
    images = np.random.default_rng(0).random((2, 64, 96, 3), dtype=np.float32)
    out, eps, trainable = _run(w16, images)
    assert out.shape == (2, 2, 3, 512)
    assert list(eps) == list(vgg.end_point_names("vgg16"))
    assert eps["conv1_1"].shape == (2, 64, 96, 64)
    assert eps["pool1"].shape == (2, 32, 48, 64)
    assert eps["conv4_3"].shape == (2, 8, 12, 512)
    assert trainable == []  # frozen: nothing to train, nothing in a head checkpoint


def test_final_endpoint_stops_early(w16):
    images = np.zeros((1, 32, 32, 3), np.float32)
    out, eps, _ = _run(w16, images, final_endpoint="conv3_1")
    assert out.shape == (1, 8, 8, 256)
    assert list(eps)[-1] == "conv3_1" and "pool3" not in eps


def test_trainable_from_makes_later_layers_trainable(w16):
    _, _, trainable = _run(w16, np.zeros((1, 32, 32, 3), np.float32), trainable_from="conv5_2")
    assert trainable == [
        "vgg16/conv5_2/weights:0",
        "vgg16/conv5_2/biases:0",
        "vgg16/conv5_3/weights:0",
        "vgg16/conv5_3/biases:0",
    ]


def test_constant_and_variable_modes_agree(w16):
    images = np.random.default_rng(1).random((1, 48, 48, 3), dtype=np.float32)
    a, _, _ = _run(w16, images, frozen="variable")
    b, _, _ = _run(w16, images, frozen="constant")
    np.testing.assert_array_equal(a, b)


def test_vgg19_builds():
    w19 = scaled_weights("vgg19")
    out, eps, _ = _run(w19, np.zeros((1, 32, 32, 3), np.float32), arch="vgg19")
    assert out.shape == (1, 1, 1, 512) and "conv5_4" in eps and len(eps) == 21


def test_preprocessing_is_caffe_bgr():
    x = np.zeros((1, 1, 1, 3), np.float32)
    x[0, 0, 0] = [1.0, 0.5, 0.0]  # R, G, B
    with tf.Graph().as_default(), tf1.Session() as sess:
        out = sess.run(vgg.preprocess(tf.constant(x)))
    np.testing.assert_allclose(out[0, 0, 0], [0 - 103.939, 127.5 - 116.779, 255 - 123.68], rtol=1e-6)


@pytest.mark.parametrize(
    "shape,message", [((None, 16, 16, 3), "at least 32x32"), ((None, 64, 64, 1), "3 channels"), ((None, 64, 3), "NHWC")]
)
def test_bad_inputs_are_value_errors(w16, shape, message):
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=message):
            vgg.vgg16(tf1.placeholder(tf.float32, shape), w16)


def test_bad_arguments(w16):
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, [None, 64, 64, 3])
        with pytest.raises(ValueError, match="unknown end point 'fc6'"):
            vgg.vgg16(x, w16, final_endpoint="fc6")
        with pytest.raises(ValueError, match="trainable_from must be a conv layer"):
            vgg.vgg16(x, w16, trainable_from="pool4")
        with pytest.raises(ValueError, match="weights lack layers conv5_1"):
            vgg.vgg16(x, {k: v for k, v in w16.items() if k != "conv5_1"})


def test_pool_and_feature_dim(w16):
    assert vgg.feature_dim("vgg16", "pool5", "flatten", 224) == 25088
    assert vgg.feature_dim("vgg16", "pool5", "avg", 224) == 512
    assert vgg.feature_dim("vgg16", "conv4_3", "flatten", 64) == 8 * 8 * 512
    with tf.Graph().as_default(), tf1.Session() as sess:
        x = tf.constant(np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3))
        flat, mx, avg = sess.run([vgg.pool(x, "flatten"), vgg.pool(x, "max"), vgg.pool(x, "avg")])
    assert flat.shape == (2, 12) and mx.tolist()[0] == [9, 10, 11] and avg.tolist()[0] == [4.5, 5.5, 6.5]
    with pytest.raises(ValueError, match="pooling must be"):
        vgg.pool(x, "sum")


def test_parity_with_keras_applications(real_weights, shared_dir):
    """Same weights in keras.applications.VGG16 + keras' own preprocess_input give the same pool5 (rel. err <= 1e-4)."""
    keras = require_module("keras")
    weights = load_weights(real_weights)
    demo = shared_data(shared_dir, "morvan_tiger_kittycat", "demo")
    images = np.stack([load_image(p, 224) for p in sorted(demo.rglob("*.jpg"))])
    ours, eps, _ = _run(weights, images)

    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    model.set_weights([a for name in vgg.conv_layer_names("vgg16") for a in weights[name]])
    ref = model.predict(keras.applications.vgg16.preprocess_input(images * 255.0), verbose=0)
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert ours.shape == ref.shape == (2, 7, 7, 512)
    assert rel <= 1e-4, rel
    # the features carry signal: the two demo images (a tiger, a cat) differ
    assert np.linalg.norm(ours[0] - ours[1]) > 0.1 * np.linalg.norm(ours[0])


def test_feature_extractor_detects_vgg19_from_a_file(tmp_path):
    """A VGG19 weights file given without ``arch`` builds VGG19 (it used to build VGG16 on the first 13 layers)."""
    from vggtransfer.features.extractor import FeatureExtractor
    from vggtransfer.weights.npy import save_weights

    path = save_weights(scaled_weights("vgg19"), tmp_path / "vgg19.npy")
    with FeatureExtractor(str(path), end_point="pool5", pooling="avg", image_size=32) as fx:
        assert fx.arch == "vgg19" and "conv5_4" in fx.end_points
    with FeatureExtractor(scaled_weights("vgg19"), end_point="pool5", pooling="avg", image_size=32) as fx:
        assert fx.arch == "vgg19"


def test_the_fine_tuning_top_is_the_same_builder():
    """``vgg_conv(start_from=...)`` builds the layers from a conv layer on the maps before it (the fine-tuned top):
    its output equals the full stack's, its variables are the trainable ones, named as fine-tuned checkpoints hold
    them (``finetune/conv5_1/weights``), and nothing is left waiting to be fed after ``initialize``."""
    weights = scaled_weights("vgg16")
    graph = tf.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [None, 64, 64, 3])
        full, end_points = vgg.vgg_conv(images, weights, final_endpoint="pool5")
        prefix = tf1.placeholder(tf.float32, [None, 8, 8, 512])
        top, top_points = vgg.vgg_conv(
            prefix, weights, start_from="conv4_2", trainable_from="conv4_2", scope="finetune"
        )
        trainable = [v.op.name for v in tf1.trainable_variables()]
        session = tf1.Session(graph=graph)
        vgg.initialize(session)
    assert trainable == [
        f"finetune/{n}/{p}"
        for n in ("conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
        for p in ("weights", "biases")
    ]
    assert list(top_points) == ["conv4_2", "conv4_3", "pool4", "conv5_1", "conv5_2", "conv5_3", "pool5"]
    assert vgg.weight_feeds(graph) == {}
    x = np.random.default_rng(0).random((2, 64, 64, 3), np.float32)
    expected, maps = session.run([full, end_points["conv4_1"]], {images: x})
    np.testing.assert_array_equal(session.run(top, {prefix: maps}), expected)
    with graph.as_default(), pytest.raises(ValueError, match="start_from must be a conv layer"):
        vgg.vgg_conv(prefix, weights, start_from="pool4")
    session.close()


def test_the_architecture_table_is_declared_once():
    from vggtransfer.nets.cfg import get_cfg

    for arch, convs in (("vgg16", 13), ("vgg19", 16)):
        cfg = get_cfg(arch)
        assert len(cfg.conv_layers) == convs and len(cfg.end_points) == convs + 5
        assert cfg.feature_info == [
            {"module": f"pool{b}", "num_chs": c, "reduction": 2**b}
            for b, c in zip(range(1, 6), (64, 128, 256, 512, 512))
        ]
        assert cfg.layer("conv3_1").reduction == 4 and cfg.layer("conv3_1").in_channels == 128
        assert vgg.feature_dim(arch, "pool4", "flatten", 100) == 6 * 6 * 512
    with pytest.raises(ValueError, match="unknown architecture 'vgg11'"):
        get_cfg("vgg11")

"""One memory scenario in a fresh process (run under /usr/bin/time -v by bench_memory.py): load + build + predict.

    vggtransfer-variable FILE  -- FeatureExtractor (frozen conv as variables fed once), predict one image
    vggtransfer-constant FILE  -- the same graph with frozen='constant'
    model FILE                 -- vggtransfer.Vgg16 (conv + head), predict one image file
    tutorial FILE              -- the tutorial: np.load the whole npy, conv AND fc6-fc8 as tf.constant, one forward
    import                     -- import tensorflow only
Prints the first-run seconds (session start to first result) as JSON on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    mode = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) > 2 else None
    image = sys.argv[3] if len(sys.argv) > 3 else None
    t0 = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    tf1 = tf.compat.v1
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    if mode == "import":
        out = None
    elif mode.startswith("vggtransfer"):
        from vggtransfer.nets import vgg
        from vggtransfer.weights.npy import load_weights

        weights = load_weights(path)
        graph = tf.Graph()
        with graph.as_default():
            images = tf1.placeholder(tf.float32, [None, 224, 224, 3])
            net, _ = vgg.vgg16(images, weights, frozen=mode.split("-")[1])
            feat = vgg.pool(net, "avg")
            sess = tf1.Session(graph=graph)
            vgg.initialize(sess)
        del weights
        t1 = time.perf_counter()
        out = sess.run(feat, {images: x})
    elif mode == "model":
        from vggtransfer.models.vgg16 import Vgg16

        model = Vgg16(path)
        t1 = time.perf_counter()
        out = model.predict(image)
    elif mode == "tutorial":
        # MorvanZhou 407_transfer_learning / machrisaa vgg16.py: the whole dict in memory, every layer a constant.
        data_dict = np.load(path, encoding="latin1", allow_pickle=True).item()
        graph = tf.Graph()
        with graph.as_default():
            images = tf1.placeholder(tf.float32, [None, 224, 224, 3])
            net = images * 255.0 - np.asarray([103.939, 116.779, 123.68], np.float32)
            from vggtransfer.weights.npy import conv_blocks

            for block in conv_blocks("vgg16"):
                for name, _, _ in block:
                    net = tf.nn.relu(
                        tf.nn.conv2d(net, tf.constant(data_dict[name][0]), 1, "SAME") + tf.constant(data_dict[name][1])
                    )
                net = tf.nn.max_pool2d(net, 2, 2, "VALID")
            net = tf.reshape(net, [-1, 25088])
            for name in ("fc6", "fc7", "fc8"):
                net = tf.matmul(net, tf.constant(data_dict[name][0])) + tf.constant(data_dict[name][1])
            sess = tf1.Session(graph=graph)
        t1 = time.perf_counter()
        out = sess.run(net, {images: x})
    else:
        raise SystemExit(f"unknown mode {mode}")
    t2 = time.perf_counter()
    print(json.dumps({"first_run_s": (t2 - t1) if out is not None else 0.0, "total_s": t2 - t0}))


if __name__ == "__main__":
    main()

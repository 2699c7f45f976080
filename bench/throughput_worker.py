"""One framework in its own process, driven over stdin/stdout by bench_throughput.py (so the frameworks' thread
pools never share a process). Commands are JSON lines {"size", "batch", "images"}; answers {"seconds"}.

Frameworks: vggtransfer-fp32, vggtransfer-bf16 (FeatureExtractor.extract_arrays, pool5 'flatten' = the raw pool5
map), keras (keras.applications.VGG16(include_top=False).predict), torch (plain torch.nn VGG16 conv stack,
channels_last, eval, inference_mode). All load the same weights file; inputs are the same seeded images.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from vggtransfer.weights.npy import VGG_MEAN_BGR, conv_blocks, load_weights  # noqa: E402


def images(size: int, n: int) -> np.ndarray:
    return np.random.default_rng(size).random((n, size, size, 3), dtype=np.float32)


def caffe(x: np.ndarray) -> np.ndarray:
    """RGB [0,1] -> BGR 0..255 minus the mean (what vggtransfer does in its graph)."""
    return np.ascontiguousarray(x[..., ::-1] * 255.0 - np.asarray(VGG_MEAN_BGR, np.float32))


class VggTransfer:
    def __init__(self, weights_path, precision, threads):
        from vggtransfer.features.extractor import FeatureExtractor

        self.weights = load_weights(weights_path)
        self.precision, self.threads, self.fx = precision, threads, {}
        self.FeatureExtractor = FeatureExtractor

    def prepare(self, size, batch, n):
        key = (size, batch)
        if key not in self.fx:
            self.fx[key] = self.FeatureExtractor(
                self.weights,
                pooling="flatten",
                image_size=size,
                batch_size=batch,
                precision=self.precision,
                threads=self.threads,
            )
        return self.fx[key], images(size, n)

    def run(self, state):
        fx, x = state
        return fx.extract_arrays(x)


class Keras:
    def __init__(self, weights_path, precision, threads):
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        self.weights = load_weights(weights_path)
        self.models = {}

    def prepare(self, size, batch, n):
        import keras

        if size not in self.models:
            model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
            flat = []
            for block in conv_blocks("vgg16"):
                for name, _, _ in block:
                    flat.extend(self.weights[name])
            model.set_weights(flat)
            self.models[size] = model
        return self.models[size], caffe(images(size, n)), batch

    def run(self, state):
        model, x, batch = state
        return model.predict(x, batch_size=batch, verbose=0)


class Torch:
    def __init__(self, weights_path, precision, threads):
        import torch
        from torch import nn

        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        layers = []
        w = load_weights(weights_path)
        for block in conv_blocks("vgg16"):
            for name, c_in, c_out in block:
                conv = nn.Conv2d(c_in, c_out, 3, padding=1)
                conv.weight.data = torch.from_numpy(np.ascontiguousarray(w[name][0].transpose(3, 2, 0, 1)))
                conv.bias.data = torch.from_numpy(w[name][1].copy())
                layers += [conv, nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2, 2))
        self.torch = torch
        self.model = nn.Sequential(*layers).eval().to(memory_format=torch.channels_last)

    def prepare(self, size, batch, n):
        x = self.torch.from_numpy(caffe(images(size, n)).transpose(0, 3, 1, 2).copy())
        return x.contiguous(memory_format=self.torch.channels_last), batch

    def run(self, state):
        x, batch = state
        with self.torch.inference_mode():
            return [self.model(x[s : s + batch]) for s in range(0, len(x), batch)]


def main():
    framework, weights_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None
    if framework.startswith("vggtransfer"):
        impl = VggTransfer(weights_path, framework.split("-")[1], threads)
    elif framework == "keras":
        impl = Keras(weights_path, "fp32", threads)
    elif framework == "torch":
        impl = Torch(weights_path, "fp32", threads)
    else:
        raise SystemExit(f"unknown framework {framework}")
    states = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "output":  # pool5 of the first images, for the cross-framework agreement check
            state = impl.prepare(cmd["size"], cmd["batch"], cmd["images"])
            out = impl.run(state)
            if isinstance(out, list):  # torch: NCHW -> NHWC
                out = impl.torch.cat(out).permute(0, 2, 3, 1).numpy()
            print(json.dumps({"pool5": np.asarray(out, np.float32).reshape(-1).tolist()}), flush=True)
            continue
        key = (cmd["size"], cmd["batch"], cmd["images"])
        if key not in states:
            states[key] = impl.prepare(*key)
            impl.run(states[key])  # warm-up (graph optimisation, oneDNN primitive creation, tf.function tracing)
        t = time.perf_counter()
        impl.run(states[key])
        print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)


if __name__ == "__main__":
    main()

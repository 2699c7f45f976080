"""HDF5 feature store: chunked writes, resume after SIGKILL, stale-configuration refusal, array data sets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from recipe_data import colour_folder, colour_h5

from vggtransfer.data import datasets
from vggtransfer.data.store import FeatureStoreMismatch, build_store, open_store, store_status
from vggtransfer.features.extractor import FeatureExtractor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fx(scaled_npy):
    with FeatureExtractor(
        scaled_npy, end_point="pool5", pooling="max", image_size=32, batch_size=4, precision="fp32"
    ) as f:
        yield f


@pytest.fixture
def folder(tmp_path):
    root = colour_folder(tmp_path / "data", per_class=8)
    (root / "red" / "zz_bad.jpg").write_bytes(b"not a jpeg")
    return root


def test_store_holds_features_labels_names_paths_and_config(fx, folder, tmp_path):
    ds = datasets.from_folder(folder, verify=False)  # the bad file reaches the store and is recorded there
    path = build_store(tmp_path / "s.h5", ds, fx, chunk_rows=3, progress=False)  # 17 rows > 3-row buffer
    st = open_store(path, fx.config)
    direct, ok, _ = fx.extract_paths(ds.paths, progress=False)
    assert len(st) == 16 and np.allclose(st.features, direct, atol=1e-5)
    assert st.label_names == ("blue", "red") and st.labels.tolist() == [0] * 8 + [1] * 8
    assert st.paths == [ds.paths[i] for i in ok]
    assert len(st.errors) == 1 and st.errors[0][0].endswith("zz_bad.jpg")
    for key in ("weights_sha256", "end_point", "pooling", "image_size", "preprocessing", "library_version"):
        assert st.config[key] == fx.config[key]


def test_stale_store_is_refused_naming_each_difference(scaled_npy, fx, folder, tmp_path):
    ds = datasets.from_folder(folder)
    path = build_store(tmp_path / "s.h5", ds, fx, progress=False)
    with FeatureExtractor(scaled_npy, end_point="pool5", pooling="avg", image_size=48) as other:
        with pytest.raises(FeatureStoreMismatch) as err:
            build_store(path, ds, other, progress=False)
        msg = str(err.value)
        assert "pooling: stored 'max' vs requested 'avg'" in msg and "image_size: stored 32 vs requested 48" in msg
        with pytest.raises(FeatureStoreMismatch, match="pooling"):
            open_store(path, other.config)
    with pytest.raises(FeatureStoreMismatch, match="items"):
        build_store(path, ds.subset(range(5)), fx, progress=False)
    # features computed in bf16 differ from fp32 ones: never mixed into one store
    with pytest.raises(FeatureStoreMismatch, match="precision: stored 'fp32' vs requested 'bf16'"):
        open_store(path, {**fx.config, "precision": "bf16"})


def test_array_dataset_store(fx, tmp_path):
    ds = datasets.from_signs_h5(colour_h5(tmp_path / "t.h5", 3))
    st = open_store(build_store(tmp_path / "a.h5", ds, fx, progress=False), fx.config)
    assert st.features.shape == (6, 512) and st.paths[0] == "t.h5:train_set_x[0]"
    assert np.allclose(st.features, fx.extract_arrays(ds.images(32)), atol=1e-5)


CHILD = textwrap.dedent("""
    import os, signal, sys
    from vggtransfer.data import datasets
    from vggtransfer.data import store
    from vggtransfer.features.extractor import FeatureExtractor
    flushes = [0]
    real = store.BufferedRowWriter.flush
    def flush(self):
        real(self)
        flushes[0] += 1
        if flushes[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the run
    store.BufferedRowWriter.flush = flush
    fx = FeatureExtractor(sys.argv[1], end_point="pool5", pooling="max", image_size=32, batch_size=2, precision="fp32")
    store.build_store(sys.argv[3], datasets.from_folder(sys.argv[2]), fx, chunk_rows=2, progress=False)
""")


def test_resume_after_sigkill_computes_only_the_rest(scaled_npy, fx, folder, tmp_path):
    (folder / "red" / "zz_bad.jpg").unlink()
    path = tmp_path / "s.h5"
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(scaled_npy), str(folder), str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert store_status(path) == (6, 16)
    with pytest.raises(ValueError, match="incomplete"):
        open_store(path)
    ds = datasets.from_folder(folder)
    computed = []
    real_iter = fx.iter_paths

    def counting(paths, workers=None):
        computed.extend(paths)
        return real_iter(paths, workers)

    fx.iter_paths = counting
    try:
        build_store(path, ds, fx, chunk_rows=4, progress=False)
    finally:
        del fx.iter_paths
    assert len(computed) == 10 and not set(computed) & set(ds.paths[:6])  # nothing recomputed
    st = open_store(path, fx.config)
    assert st.paths == ds.paths  # nothing duplicated, in order
    direct, _, _ = fx.extract_paths(ds.paths, progress=False)
    assert np.allclose(st.features, direct, atol=1e-5)


def test_a_store_in_use_by_another_process_is_named_as_such(tmp_path):
    """HDF5 locks a file open for writing; a second `extract` on it said 'not a readable HDF5 feature store ...
    choose another --store path', which sends the user away from a store that is fine."""
    import subprocess
    import sys

    import h5py

    from vggtransfer.data.store import check_store_path, extract_resumable

    path = tmp_path / "busy.h5"
    h5py.File(path, "w").close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import h5py, sys, time; f = h5py.File(sys.argv[1], 'r+'); print('open', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ValueError, match="busy.h5: in use by another process"):
            check_store_path(path)
        with pytest.raises(ValueError, match="in use by another process"):  # a cache in use is never deleted
            extract_resumable(path, None, None)
        assert path.is_file()
    finally:
        holder.kill()
        holder.wait()
    check_store_path(path)  # free again


def test_a_block_store_written_before_the_mirror_field_matches_the_same_features_and_not_the_mirror():
    """Stores written before ``FeatureSpec.mirror`` existed have no such key; they were made without the mirror image,
    so they match that request (resume, evaluate) and are refused for the mirror one, naming the features."""
    from vggtransfer.data.store import compare_config
    from vggtransfer.features.spec import FeatureSpec

    old = {k: v for k, v in FeatureSpec(scales=(64,)).to_dict().items() if k != "mirror"}
    assert compare_config({"features": old}, {"features": FeatureSpec(scales=(64,)).to_dict()}) == {}
    diff = compare_config({"features": old}, {"features": FeatureSpec(scales=(64,), mirror=True).to_dict()})
    assert list(diff) == ["features"] and diff["features"][1]["mirror"] is True

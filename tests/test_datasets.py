"""Data sets: folder / SIGNS h5 / CSV loaders, bad items reported by name, splits, class weights."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from recipe_data import colour_folder, colour_h5

from vggtransfer.data import datasets
from vggtransfer.data.datasets import DatasetError


def test_folder_classes_sorted_and_bad_files_named(tmp_path):
    root = colour_folder(tmp_path / "data", per_class=4)
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "blue" / "notes.txt").write_text("hello")
    (root / "blue" / "empty.png").write_bytes(b"")
    ds = datasets.from_folder(root)
    assert ds.classes == ("blue", "red")
    assert len(ds) == 8 and ds.class_counts().tolist() == [4, 4]
    bad = {b.name.split("/")[-1]: b.reason for b in ds.bad}
    assert set(bad) == {"broken.jpg", "notes.txt", "empty.png"}
    assert all(reason for reason in bad.values())


def test_images_in_sub_folders_belong_to_their_class_and_split_layouts_are_named(tmp_path):
    root = colour_folder(tmp_path / "data", per_class=2)
    (root / "red" / "batch2").mkdir()
    (root / "red" / "batch2" / "x.png").write_bytes((root / "red" / "01.png").read_bytes())
    (root / "red" / ".cache").mkdir()
    (root / "red" / ".cache" / "y.png").write_bytes((root / "red" / "01.png").read_bytes())
    ds = datasets.from_folder(root)
    assert ds.class_counts().tolist() == [2, 3]  # batch2/x.png counted, the hidden .cache not
    assert any(str(p).endswith("batch2/x.png") for p in ds.paths)
    split_root = tmp_path / "splits"
    colour_folder(split_root / "train", per_class=2)
    colour_folder(split_root / "val", per_class=2)
    with pytest.raises(DatasetError, match=r"holds split folders \(train/, val/\), not class folders.*splits/train"):
        datasets.from_folder(split_root)
    flat = tmp_path / "flat"  # classes that happen to be called train/test, images directly inside: classes
    for name in ("test", "train"):
        (flat / name).mkdir(parents=True)
        (flat / name / "a.png").write_bytes((root / "red" / "01.png").read_bytes())
    assert datasets.from_folder(flat).classes == ("test", "train")
    (root / "blue" / "loop").symlink_to(root / "blue", target_is_directory=True)  # a link back up: read once
    assert datasets.from_folder(root).class_counts().tolist() == [2, 3]


def test_a_folder_one_level_above_the_class_folders_gets_a_note_naming_the_folder_to_give(tmp_path):
    root = tmp_path / "photos"
    colour_folder(root / "data", per_class=2)
    colour_folder(root / "demo", per_class=1)
    ds = datasets.from_folder(root)
    assert ds.classes == ("data", "demo")  # as torchvision's ImageFolder reads it: not an error
    (note,) = ds.notes
    assert "every class folder (data/, demo/) holds the same folders (blue/, red/)" in note
    assert f"give one of data/, demo/ instead, e.g. {root / 'data'}" in note
    assert ds.subset([0, 1]).notes == ds.notes
    assert datasets.from_folder(root / "data").notes == []  # class folders with images: nothing to note
    (root / "demo" / "red").rename(root / "demo" / "green")  # different sub-folders: a hierarchy, not a split
    assert datasets.from_folder(root).notes == []
    (root / "demo" / "green").rename(root / "demo" / "red")
    (root / "demo" / "loose.png").write_bytes((root / "data" / "red" / "01.png").read_bytes())
    assert datasets.from_folder(root).notes == []  # a class folder with an image of its own


def test_image_files_outside_the_class_folders_are_named_not_silently_left_out(tmp_path):
    root = colour_folder(tmp_path / "photos", per_class=2)
    red = sorted((root / "red").iterdir())
    (root / "stray.png").write_bytes(red[0].read_bytes())
    (root / "notes.txt").write_text("not an image")  # other files at the top are not images left out: no word
    ds = datasets.from_folder(root)
    assert len(ds) == 4 and ds.classes == ("blue", "red")
    assert ds.notes == [
        f"{root}: 1 image file(s) lie directly in the folder, outside any class folder (e.g. stray.png): they have "
        "no class and are left out; move them into their class folder"
    ]
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in red:
        (flat / f.name).write_bytes(f.read_bytes())
    with pytest.raises(DatasetError, match=r"no class folders .*; it holds 2 image file\(s\) directly: move them"):
        datasets.from_folder(flat)


def test_fingerprints_match_identical_content_whatever_the_name(tmp_path):
    root = colour_folder(tmp_path / "data", per_class=2)
    a = sorted((root / "red").iterdir())[0]
    (tmp_path / "copy.bin").write_bytes(a.read_bytes())
    (tmp_path / "other.bin").write_bytes(a.read_bytes() + b"\0")
    fp = datasets.fingerprints([a, tmp_path / "copy.bin", tmp_path / "other.bin", tmp_path / "missing.jpg"])
    assert fp.dtype == np.dtype("S16") and fp[0] == fp[1] and fp[0] != fp[2] and fp[3] == b""
    pixels = np.zeros((4, 6, 3), np.uint8)
    arrays = datasets.fingerprints([pixels, pixels.copy(), pixels.reshape(6, 4, 3)])
    assert arrays[0] == arrays[1] and arrays[0] != arrays[2]  # the same bytes in another shape: another image
    ds = datasets.from_folder(root)
    assert ds.fingerprints().tolist() == datasets.fingerprints(ds.paths).tolist()
    assert len(datasets.fingerprints([])) == 0


def test_copy_notes_name_copies_and_copies_filed_under_two_labels(tmp_path):
    root = colour_folder(tmp_path / "data", per_class=3)
    assert datasets.from_folder(root).copy_notes() == []
    red = sorted((root / "red").iterdir())
    (root / "red" / "again.png").write_bytes(red[1].read_bytes())
    (root / "blue" / "placeholder.jpg").write_bytes(red[0].read_bytes())  # one file under two classes
    ds = datasets.from_folder(root)
    first, second = ds.copy_notes()
    assert first.startswith("2 training items are copies of others (the same bytes), e.g. ")
    assert second.startswith("1 of those images carries different labels, e.g. ")
    assert f"{root / 'blue' / 'placeholder.jpg'} (blue)" in second and f"{red[0]} (red)" in second
    targets = datasets.Dataset([str(red[0]), str(root / "blue" / "placeholder.jpg")], np.array([1.0, 2.5]), ())
    assert "different targets" in targets.copy_notes()[1] and "(2.5)" in targets.copy_notes()[1]


def test_summary_names_the_counts_a_user_should_check(tmp_path):
    two = datasets.Dataset(["a", "b", "c"], np.array([0, 1, 1]), ("ants", "bees"), source="s")
    assert two.summary() == "3 images in 2 classes (ants: 1, bees: 2)"
    many = datasets.Dataset([str(i) for i in range(25)], np.arange(25) % 10, tuple("abcdefghij"))
    assert many.summary() == "25 images in 10 classes (2 to 3 per class)"
    targets = datasets.Dataset(["a", "b"], np.array([20.0, 150.5]), ())
    assert targets.summary() == "2 images, targets 20 to 150.5 (mean 85.25)"
    assert datasets.Dataset(["a"], np.array([1.0]), ()).summary().startswith("1 image,")
    one = datasets.Dataset(["a", "b"], np.array([0, 0]), ("ants",))  # refused later: the line must still read right
    assert one.summary() == "2 images in 1 class (ants: 2)"


def test_empty_folder_and_no_usable_item_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="no class folders"):
        datasets.from_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="no usable item.*x.jpg"):
        datasets.from_folder(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        datasets.from_folder(tmp_path / "missing")
    with pytest.raises(DatasetError, match="x.jpg: is a file; expected a folder of class folders"):
        datasets.from_folder(tmp_path / "a" / "x.jpg")
    with pytest.raises(DatasetError, match=r"data set: 1 paths but 2 labels"):
        datasets.from_paths([tmp_path / "a" / "x.jpg"], ["a", "b"])
    with pytest.raises(ValueError, match="concat needs at least one data set"):
        datasets.concat()


def test_split_is_seeded_and_stratified_and_class_weights(tmp_path):
    root = colour_folder(tmp_path / "data", per_class=10)
    for i in range(10, 30):  # imbalance: 30 red vs 10 blue
        (root / "red" / f"{i}.png").write_bytes((root / "red" / "01.png").read_bytes())
    ds = datasets.from_folder(root)
    tr1, va1 = ds.split(0.25, seed=3)
    tr2, va2 = ds.split(0.25, seed=3)
    assert tr1.paths == tr2.paths and va1.paths == va2.paths
    assert not set(tr1.paths) & set(va1.paths)
    assert va1.class_counts().tolist() == [2, 8]  # stratified 25 % of 10 and 30 (rounded)
    w = ds.class_weights()
    assert w[0] == pytest.approx(40 / (2 * 10)) and w[1] == pytest.approx(40 / (2 * 30))


def test_csv_unknown_label_bad_target_missing_file(tmp_path):
    colour_folder(tmp_path / "data", per_class=3)
    csv = tmp_path / "items.csv"
    csv.write_text(
        "path,label\ndata/red/00.jpg,red\ndata/blue/00.jpg,blue\ndata/blue/01.png,green\ndata/red/missing.jpg,red\n"
    )
    ds = datasets.from_csv(csv, classes=["blue", "red"])
    assert len(ds) == 2 and ds.labels.tolist() == [1, 0]
    reasons = " | ".join(str(b) for b in ds.bad)
    assert "items.csv:4 (data/blue/01.png): unknown label 'green'" in reasons  # the path as the row gives it
    assert "items.csv:5 (data/red/missing.jpg)" in reasons
    reg = tmp_path / "reg.csv"
    reg.write_text("path,target\ndata/red/00.jpg,1.5\ndata/blue/00.jpg,abc\n")
    ds = datasets.from_csv(reg, task="regression")
    assert ds.task == "regression" and ds.labels.tolist() == [1.5]
    assert "not a finite number" in str(ds.bad[0])
    with pytest.raises(DatasetError, match="no column 'label'"):
        datasets.from_csv(reg)


def test_signs_h5_loads_arrays_and_rejects_wrong_keys_and_shapes(tmp_path):
    good = colour_h5(tmp_path / "train.h5", 3)
    ds = datasets.from_signs_h5(good)
    assert ds.arrays.shape == (6, 32, 32, 3) and ds.classes == ("0", "1")
    assert ds.images(48).shape == (6, 48, 48, 3)
    assert ds.paths[0] == "train.h5:train_set_x[0]"
    with pytest.raises(DatasetError, match=r"missing key.*test_set_x.*it holds the split\(s\): train$"):
        datasets.from_signs_h5(good, split="test")
    bad_shape = tmp_path / "shape.h5"
    with h5py.File(bad_shape, "w") as fh:
        fh["train_set_x"] = np.zeros((4, 32, 32, 2), np.uint8)
        fh["train_set_y"] = np.zeros(4, np.int64)
        fh["list_classes"] = np.array([0, 1])
    with pytest.raises(DatasetError, match=r"train_set_x must hold images of shape \(n, height, width, 3\)"):
        datasets.from_signs_h5(bad_shape)
    bad_y = tmp_path / "y.h5"
    with h5py.File(bad_y, "w") as fh:
        fh["train_set_x"] = np.zeros((4, 32, 32, 3), np.uint8)
        fh["train_set_y"] = np.array([0, 1, 7, 1])
        fh["list_classes"] = np.array([0, 1])
    ds = datasets.from_signs_h5(bad_y)
    assert len(ds) == 3 and "train_set_y[2]" in ds.bad[0].name and "7" in ds.bad[0].reason
    assert "not a class index 0..1" in ds.bad[0].reason
    mismatch = tmp_path / "n.h5"
    with h5py.File(mismatch, "w") as fh:
        fh["train_set_x"] = np.zeros((4, 32, 32, 3), np.uint8)
        fh["train_set_y"] = np.zeros(3, np.int64)
        fh["list_classes"] = np.array([0, 1])
    with pytest.raises(DatasetError, match="train_set_y must have shape"):
        datasets.from_signs_h5(mismatch)
    not_h5 = tmp_path / "x.h5"
    not_h5.write_text("nope")
    with pytest.raises(DatasetError, match="cannot open as HDF5"):
        datasets.from_signs_h5(not_h5)
    with pytest.raises(DatasetError, match="gone.h5: no such file; expected an .h5 file"):
        datasets.from_signs_h5(tmp_path / "gone.h5")


def test_h5_other_layouts_grey_channels_first_float_labels_no_class_list(tmp_path):
    """h5 sets written by other tools load as the same images: grey repeated to RGB, channels-first moved last,
    [0, 1] floats and 16-bit pixels scaled to 0-255, whole float labels, (1, n) labels, classes 0..max label."""
    rgb = np.random.default_rng(0).integers(0, 256, (5, 8, 9, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    variants = {
        "grey": (grey, np.repeat(grey[..., None], 3, -1)),
        "grey1": (grey[..., None], np.repeat(grey[..., None], 3, -1)),
        "chw": (np.moveaxis(rgb, -1, 1), rgb),
        "float01": (rgb / 255.0, rgb),
        "uint16": (rgb.astype(np.uint16) * 257, rgb),
    }
    labels = np.array([[0.0, 2.0, 1.0, 2.0, 0.5]])  # (1, n), floats, 0.5 is no class
    for name, (stored, expected) in variants.items():
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as fh:
            fh["train_set_x"] = stored
            fh["train_set_y"] = labels
        ds = datasets.from_signs_h5(path)
        assert ds.classes == ("0", "1", "2"), name
        assert ds.labels.tolist() == [0, 2, 1, 2], name
        np.testing.assert_array_equal(ds.arrays, expected[:4], err_msg=name)
        assert [b.name for b in ds.bad] == [f"{name}.h5:train_set_y[4]"], name
        assert ds.bad[0].reason == "label 0.5 is not a class index 0..2", name
    one_class = tmp_path / "one.h5"
    with h5py.File(one_class, "w") as fh:
        fh["train_set_x"] = rgb
        fh["train_set_y"] = np.zeros(5)
    with pytest.raises(DatasetError, match="no list_classes"):
        datasets.from_signs_h5(one_class)
    text = tmp_path / "text.h5"
    with h5py.File(text, "w") as fh:
        fh["train_set_x"] = np.array([b"a", b"b"])
        fh["train_set_y"] = np.zeros(2)
    with pytest.raises(DatasetError, match="train_set_x must"):
        datasets.from_signs_h5(text)


def test_a_class_without_training_items_is_named_and_stops_api_training_before_features(tmp_path, scaled_npy):
    from vggtransfer.models.auto import AutoClassifier

    ds = datasets.Dataset(["a.jpg", "b.jpg"], np.array([0, 2]), ("ant", "bee", "wasp"), source="x.h5[train]")
    with pytest.raises(DatasetError, match=r"x\.h5\[train\]: no training item of class\(es\) bee \(of 3"):
        ds.check_every_class()
    with pytest.raises(DatasetError, match=r"photos: one class only \(ant\); a classifier needs 2"):
        datasets.Dataset(["a.jpg"], np.array([0]), ("ant",), source="photos").check_every_class()
    two = datasets.Dataset(["a.jpg", "b.jpg", "c.jpg"], np.array([0, 0, 1]), ("ant", "bee"), source="photos")
    two.check_every_class()
    with pytest.raises(DatasetError, match=r"photos: class\(es\) bee have fewer than 2 training items"):
        two.check_every_class(min_items=2)
    datasets.Dataset(["a.jpg"], np.array([1.5]), ()).check_every_class()  # targets: nothing to check
    model = AutoClassifier(scaled_npy, classes=("ant", "bee", "wasp"))
    with pytest.raises(DatasetError, match="no training item of class"):
        model.train_dataset(ds)  # the paths do not exist: reaching the features would report them instead
    with pytest.raises(DatasetError, match="have fewer than 2 training items"):
        AutoClassifier(scaled_npy, classes=("ant", "bee")).train_dataset(two)


def test_csv_as_spreadsheets_write_it(tmp_path):
    folder = colour_folder(tmp_path / "photos", per_class=2)
    red, blue = sorted((folder / "red").iterdir())[0], sorted((folder / "blue").iterdir())[0]
    # Excel's "CSV UTF-8": a byte-order mark, CRLF line ends; header names in other case, with spaces
    (tmp_path / "excel.csv").write_bytes(f"\ufeffPath , Label\r\n{red},red\r\n{blue},blue\r\n".encode())
    ds = datasets.from_csv(tmp_path / "excel.csv")
    assert ds.classes == ("blue", "red") and list(ds.labels) == [1, 0] and not ds.bad
    # semicolons (a locale whose decimal mark is the comma), decimal commas in targets; tabs
    (tmp_path / "semi.csv").write_text(f"path;target\n{red};12,5\n{blue};7\n")
    assert list(datasets.from_csv(tmp_path / "semi.csv", task="regression").labels) == [12.5, 7.0]
    (tmp_path / "tabs.csv").write_text(f"path\tlabel\n{red}\tred\n{blue}\tblue\n")
    assert datasets.from_csv(tmp_path / "tabs.csv").classes == ("blue", "red")
    # a comma file keeps "12,5" as text: not a number, reported for its row
    (tmp_path / "comma.csv").write_text(f'path,target\n{red},"12,5"\n{blue},7\n')
    ds = datasets.from_csv(tmp_path / "comma.csv", task="regression")
    assert list(ds.labels) == [7.0] and "comma.csv:2" in str(ds.bad[0]) and "'12,5'" in str(ds.bad[0])
    # a CSV written on Windows: relative paths with backslashes
    (folder.parent / "win.csv").write_text(f"path,label\nphotos\\red\\{red.name},red\nphotos\\blue\\{blue.name},blue\n")
    ds = datasets.from_csv(folder.parent / "win.csv")
    assert ds.paths == [str(red), str(blue)] and not ds.bad
    # an exact name wins; two that differ from it only in case are ambiguous: named, not guessed
    (tmp_path / "exact.csv").write_text(f"path,Label,label\n{red},blue,red\n{blue},red,blue\n")
    assert list(datasets.from_csv(tmp_path / "exact.csv").labels) == [1, 0]
    (tmp_path / "twice.csv").write_text(f"path,Label,LABEL\n{red},red,red\n")
    with pytest.raises(DatasetError, match="no column 'label'"):
        datasets.from_csv(tmp_path / "twice.csv")

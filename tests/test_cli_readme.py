"""Every command line of the README's CLI section, run as written on tiny real data (real weights, real photos),
and every option the section documents exercised at least once."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from local_http import LocalServer, body

from vggtransfer.cli import main

REPO = Path(__file__).resolve().parents[1]


def readme_cli_section() -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index("\n## CLI\n") : text.index("\n## Weights\n")]


def readme_commands() -> list:
    block = readme_cli_section().split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("vggtransfer ")]


def documented_options() -> set:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", readme_cli_section()))


def pick(folder: Path, n: int) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]


def test_readme_cli_commands_run_on_tiny_real_data(tmp_path, real_weights, shared_dir, monkeypatch, capsys):
    from conftest import shared_data
    from test_weight_sources import write_legacy_h5

    from vggtransfer.weights.npy import load_weights

    hym = shared_data(shared_dir, "hymenoptera")
    tc = shared_data(shared_dir, "morvan_tiger_kittycat")
    train_root = next(p for p in hym.rglob("train") if p.is_dir())
    val_root = next(p for p in hym.rglob("val") if p.is_dir())
    # photos/<class>/ and photos_val/<class>/: 4 + 2 real photos per class; lengths CSVs from real tiger/cat photos
    for src, dst, n in ((train_root, "photos", 4), (val_root, "photos_val", 2)):
        for cls in ("ants", "bees"):
            (tmp_path / dst / cls).mkdir(parents=True)
            for p in pick(src / cls, n):
                shutil.copy(p, tmp_path / dst / cls / p.name)
    tigers, cats = pick(tc / "data" / "tiger", 6), pick(tc / "data" / "kittycat", 6)
    rows = [(p, 100.0 + i) for i, p in enumerate(tigers)] + [(p, 40.0 + i) for i, p in enumerate(cats)]
    (tmp_path / "lengths.csv").write_text("path,target\n" + "".join(f"{p},{y}\n" for p, y in rows[:4] + rows[6:10]))
    (tmp_path / "lengths_val.csv").write_text("path,target\n" + "".join(f"{p},{y}\n" for p, y in rows[4:6] + rows[10:]))
    shutil.copy(tigers[0], tmp_path / "tiger.jpg")
    shutil.copy(cats[0], tmp_path / "cat.jpg")
    shutil.copy(tigers[1], tmp_path / "a.jpg")
    from PIL import Image

    Image.open(cats[1]).save(tmp_path / "b.png")
    (tmp_path / "paths.txt").write_text("# one path per line, relative to this file\na.jpg\n\nb.png\n")
    # the weights: already in the cache for fetch-weights, as a Keras .h5 for convert, $VGGTRANSFER_WEIGHTS else
    (tmp_path / "weights").mkdir()
    shutil.copy(real_weights, tmp_path / "weights" / "vgg16_conv_imagenet.npy")
    write_legacy_h5(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", load_weights(real_weights))
    monkeypatch.setenv("VGGTRANSFER_WEIGHTS", str(real_weights))
    monkeypatch.chdir(tmp_path)

    ran_options = set()
    # every option of the README line is kept; a small input keeps the test fast
    classic = ("--pooling", "--end-point", "head", "finetune")
    with LocalServer({f"/{p.name}": body(p.read_bytes()) for p in tigers + cats}) as srv:
        (tmp_path / "imagenet_tiger.txt").write_text("".join(srv.url(f"/{p.name}") + "\n" for p in tigers))
        (tmp_path / "imagenet_kittycat.txt").write_text("".join(srv.url(f"/{p.name}") + "\n" for p in cats))
        commands = readme_commands()
        assert len(commands) >= 12
        for line in commands:
            argv = shlex.split(line)[1:]
            argv = [a for a in argv if not (a.startswith("[") or a.endswith("]"))]  # optional-argument brackets
            if argv[0] in ("extract", "train"):
                if "--scales" in argv:
                    argv[argv.index("--scales") + 1] = "64,96"
                elif argv[0] == "extract" or "--data" in argv:  # a --store holds its features already
                    argv += ["--image-size", "64"] if any(c in argv for c in classic) else ["--scales", "64"]
                if "finetune" in argv:
                    argv += ["--epochs", "1", "--views", "1"]
                elif argv[0] == "train" and "linear" not in argv:
                    argv += ["--epochs", "20"]
            if argv[0] == "download":
                argv += ["--quiet", "--timeout", "2,5"]
            if argv[0] == "fetch-weights":
                argv += ["--arch", "vgg16", "--cache-dir", "weights"]
            ran_options.update(a for a in argv if a.startswith("--"))
            code = main(argv)
            out, err = capsys.readouterr()
            assert code == 0, f"{line}\n{err}"
            assert "Traceback" not in err
            if argv[0] == "predict" and "--json" in argv:
                rows = json.loads(out)
                assert len(rows) == 2 and all(len(r["top_k"]) == 2 for r in rows)
            if argv[0] == "evaluate" and "--json" in argv:
                assert json.loads(out)["n"] == 4
    assert (tmp_path / "confusion.png").is_file() and len(list((tmp_path / "data" / "imagenet_tiger").iterdir())) == 6
    # the options the section names in its prose, run once more on the same real data
    for argv in (
        [
            "predict",
            "--model",
            "models/clf",
            "a.jpg",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--max-pixels",
            "50000000",
            "--quiet",
            "--verbose",
            "--precision",
            "fp32",
        ],
        [
            "train",
            "--data",
            "photos",
            "--model",
            "models/clf2",
            "--hidden",
            "32",
            "--learning-rate",
            "0.002",
            "--epochs",
            "5",
            "--image-size",
            "64",
            "--weights",
            str(real_weights),
        ],
    ):
        ran_options.update(a for a in argv if a.startswith("--"))
        assert main(argv) == 0, capsys.readouterr().err
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0 and "--hidden" in capsys.readouterr().out
    ran_options.add("--help")
    assert documented_options() <= ran_options, documented_options() - ran_options

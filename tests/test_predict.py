"""Self-contained checkpoints and the predict command: images decoded and preprocessed exactly as
the test path, top-k with names, --json, --features, 10 views, unreadable images listed and
skipped, older checkpoints, user mistakes as one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from convnet import checkpoint
from convnet.checkpoint import CheckpointError
from convnet.data import open_source
from convnet.inference import MEAN_ARRAY, Model
from convnet.predict import main as predict_main
from convnet.predict import predict
from convnet.train import main as train_main
from small_runs import TINY_DATA as DATA
from small_runs import train_small



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_small(tmp_path_factory.mktemp("predict") / "run")


@pytest.fixture(scope="module")
def images(run_dir, tmp_path_factory):
    """The first validation images as files: PNG, JPEG, a greyscale PNG, a corrupt JPEG."""
    d = tmp_path_factory.mktemp("images")
    with open_source(DATA, workers=0) as ds:
        src = ds.source
        arrs = [src.load(1, i) for i in range(4)]
        labels = src.labels(1)[:4]
    Image.fromarray(arrs[0]).save(d / "a.png")
    Image.fromarray(arrs[1]).save(d / "b.png")
    Image.fromarray(arrs[2]).resize((40, 30)).save(d / "c.jpg", quality=95)
    Image.fromarray(arrs[3]).convert("L").save(d / "grey.png")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d, arrs, labels


def test_checkpoint_holds_what_inference_needs(run_dir):
    meta, arrays = checkpoint.load(run_dir)
    inf = meta["inference"]
    assert inf["image_size"] == [12, 12] and inf["crop"] == 12
    assert inf["classes"][:3] == inf["class_names"][:3] and len(inf["classes"]) == 10
    assert inf["data"] == DATA
    with open_source(DATA, workers=0) as ds:
        np.testing.assert_array_equal(arrays[MEAN_ARRAY], ds.source.mean)


def test_predict_matches_the_test_path(run_dir, images):
    """Files of the validation images give the probabilities the trainer's test path gives
    (same preprocessing: the 12x12 PNGs are resized to 12 = unchanged), bit for bit."""
    d, arrs, labels = images
    model = Model.load(run_dir)
    with open_source(DATA, workers=0) as ds:
        batch, labs, kept, skipped = model.prepare_source(ds.source, 1, np.arange(2))
        (test_images, _), = [next(iter(ds.test_batches(2)))]
        np.testing.assert_array_equal(batch, test_images)
    probs, _ = model.probabilities(batch)
    res = predict(run_dir, [str(d / "a.png"), str(d / "b.png")], top=10, model=model)
    for j, r in enumerate(res["results"]):
        got = np.zeros(10, np.float32)
        for t in r["top"]:
            got[t["label"]] = t["probability"]
        np.testing.assert_array_equal(got, probs[:, j])
        ps = [t["probability"] for t in r["top"]]
        assert ps == sorted(ps, reverse=True)
        assert abs(sum(ps) - 1) < 1e-5


def test_predict_command_lists_and_skips_unreadable(run_dir, images, capsys):
    d = images[0]
    missing = str(d / "missing.png")
    assert predict_main([run_dir, str(d), missing, "--top", "3"]) == 0
    out = capsys.readouterr().out
    for name in ("a.png", "b.png", "c.jpg", "grey.png"):
        assert os.path.join(str(d), name) in out
    assert "skipped 2 unreadable images:" in out
    assert "corrupt.jpg: " in out and "missing.png: no such file" in out
    # Three classes with names per image read.
    lines = out.splitlines()
    k = lines.index(os.path.join(str(d), "a.png"))
    assert all(len(ln.split()) >= 2 and float(ln.split()[0]) >= 0 for ln in lines[k + 1:k + 4])


def test_predict_json_views_and_features(run_dir, images, tmp_path, capsys):
    d = images[0]
    feats = tmp_path / "pool1.npy"
    assert predict_main([run_dir, str(d / "a.png"), str(d / "grey.png"), str(d / "corrupt.jpg"),
                         "--json", "--views", "10", "--features", "pool1", str(feats)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["views"] == 10 and len(res["results"]) == 2 and len(res["skipped"]) == 1
    assert [len(r["top"]) for r in res["results"]] == [5, 5]
    assert res["skipped"][0]["path"].endswith("corrupt.jpg")
    f = np.load(feats)
    assert f.shape == (2, 10, 8, 6, 6) and f.dtype == np.float32 and np.abs(f).sum() > 0
    # 10 views: the mean of the per-view softmax outputs, as the trainer's multiview test.
    model = Model.load(run_dir)
    batch, kept, _ = model.prepare([str(d / "a.png")], views=10)
    per_view, _ = model.forward(batch)
    top = res["results"][0]["top"][0]
    assert top["probability"] == pytest.approx(float(per_view[top["label"]].mean()), abs=1e-6)


def test_older_checkpoint_loads_with_a_note(run_dir, tmp_path, capsys):
    meta, arrays = checkpoint.load(run_dir)
    for k in ("inference", "path", "format", "step", "arrays"):
        meta.pop(k)
    arrays.pop(MEAN_ARRAY)
    old = str(tmp_path / "old")
    checkpoint.save(old, 8, arrays, meta)
    notes = []
    model = Model.load(old, say=notes.append)
    assert model.info.crop == 12 and len(model.info.class_names) == 10
    assert "older convnet" in notes[0] and "mean image" in notes[0] and DATA in notes[0]
    # Without a data source to take them from: a clear error naming what is missing.
    meta["options"].pop("data")
    checkpoint.save(old, 9, arrays, meta)
    with pytest.raises(CheckpointError, match="holds no mean image, image and crop sizes or class names"):
        Model.load(old)
    assert predict_main([old, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class names" in err and "--data" in err
    assert predict_main([old, str(tmp_path), "--data", DATA]) == 2     # loads; no images there
    assert "none of the 0 inputs" in capsys.readouterr().err


@pytest.mark.parametrize("args, text", [
    (["--top", "0"], "--top"),
    (["--device", "nope:0"], "--device"),
    (["--features", "nolayer", "x.npy"], "nolayer"),
])
def test_predict_user_mistakes_are_one_line(run_dir, images, args, text, capsys):
    try:
        code = predict_main([run_dir, str(images[0] / "a.png"), *args])
    except SystemExit as e:     # argparse's own checks
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1 and "Traceback" not in err


def test_predict_missing_checkpoint(tmp_path, capsys):
    assert predict_main([str(tmp_path / "none"), str(tmp_path)]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["convnet.predict", "convnet.export", "convnet.show"])
def test_commands_run_as_modules(module, tmp_path):
    r = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("convnet "), r.stderr
    r = subprocess.run([sys.executable, "-m", module, str(tmp_path / "none"), "x"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(module.split(".")[1].join(["convnet.", ": error:"]))


FOLDER_NET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv1]
type=conv
inputs=data
filters=4
filterSize=8
stride=8
neuron=relu
epsW=0.001
epsB=0.001
momW=0.9
momB=0.9
wc=0
[pool1]
type=pool
pool=max
inputs=conv1
sizeX=4
stride=4
[fc2]
type=fc
inputs=pool1
outputs=2
epsW=0.001
epsB=0.001
momW=0.9
momB=0.9
wc=0
[probs]
type=softmax
inputs=fc2
[logprob]
type=cost.logreg
inputs=labels,probs
"""


def test_imagenet_layout_synsets_and_views_as_the_test_path(tmp_path, capsys):
    """An ImageNet-layout folder (JPEG and PNG files of several sizes, synset_words.txt): the
    checkpoint stores the synset ids and words; predict's centre crop and 10 views of the
    validation files give the trainer's test-path probabilities (256 resize, 224 crops)."""
    rs = np.random.RandomState(3)
    root = tmp_path / "imnet"
    for split, n in (("train", 3), ("val", 2)):
        for wnid, size in (("n001", (300, 260)), ("n002", (257, 400))):
            (root / split / wnid).mkdir(parents=True)
            for k in range(n):
                arr = rs.randint(0, 256, (size[1], size[0], 3)).astype(np.uint8)
                ext = "JPEG" if k % 2 == 0 else "png"
                Image.fromarray(arr).save(root / split / wnid / f"i{k}.{ext}")
    (root / "synset_words.txt").write_text("n001 tench, Tinca tinca\nn002 goldfish\n")
    cfg = tmp_path / "net.cfg"
    cfg.write_text(FOLDER_NET)
    run = str(tmp_path / "run")
    assert train_main([str(cfg), "--data", f"folder:{root}", "--batch-size", "2", "--epochs",
                       "1", "--workers", "0", "--save-dir", run]) == 0
    meta, _ = checkpoint.load(run)
    assert meta["inference"]["classes"] == ["n001", "n002"]
    assert meta["inference"]["class_names"] == ["tench, Tinca tinca", "goldfish"]
    assert meta["inference"]["image_size"] == [256, 256] and meta["inference"]["crop"] == 224
    capsys.readouterr()
    model = Model.load(run)
    with open_source(f"folder:{root}", workers=0) as ds:
        for views in (1, 10):
            (test_images, _), = list(ds.test_batches(4, multiview=views == 10))
            paths = [ds.source.key(1, i) for i in range(4)]
            batch, kept, skipped = model.prepare(paths, views)
            assert kept == paths and not skipped
            np.testing.assert_array_equal(batch, test_images)
    assert predict_main([run, str(root / "val" / "n002"), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "n002  goldfish" in out and "n001  tench, Tinca tinca" in out

"""The trainer: exact resume (in process and after a hard kill), checkpoints, params re-read on
resume, test modes, features, and user mistakes reported without a traceback."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from convnet import checkpoint
from convnet.train import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "layers", "tiny.cfg")
# 8 steps of 32 images per epoch.
DATA = "synthetic:size=12,train=256,test=64"
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run(tmp_path, *args, name="run"):
    return main([TINY, "--data", DATA, "--batch-size", "32", "--save-dir",
                 str(tmp_path / name), *args])


def final_arrays(directory):
    meta, arrays = checkpoint.load(str(directory))
    return meta, arrays


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_equals_uninterrupted(tmp_path, capsys):
    assert run(tmp_path, "--epochs", "2", "--test-freq", "5", name="straight") == 0
    # Stop after one epoch (a checkpoint mid-epoch at step 5, one at the end, step 8), then
    # resume from the mid-epoch checkpoint: the data order, augmentation and dropout continue.
    assert run(tmp_path, "--epochs", "1", "--test-freq", "5", name="split") == 0
    os.remove(tmp_path / "split" / "ckpt-00000008.json")
    assert main([TINY, "--resume", str(tmp_path / "split"), "--epochs", "2"]) == 0
    m1, a1 = final_arrays(tmp_path / "straight")
    m2, a2 = final_arrays(tmp_path / "split")
    assert m1["step"] == m2["step"] == 16
    assert_same(a1, a2)
    # The log reads as one run: the steps after the resumed checkpoint were dropped.
    log = [json.loads(ln) for ln in open(tmp_path / "split" / "log.jsonl")]
    steps = [r["step"] for r in log if r["kind"] == "batch"]
    assert steps == list(range(1, 17))
    out = capsys.readouterr().out
    assert "resumed from" in out and "top-1 error" in out and "|dw|" in out


def test_resume_onto_other_data_is_a_user_error(tmp_path, capsys):
    # Checkpoint at batch 5 of 8; another data source (here: 2 batches per epoch) is refused.
    assert run(tmp_path, "--epochs", "1", "--test-freq", "5", name="r") == 0
    os.remove(tmp_path / "r" / "ckpt-00000008.json")
    code = main([TINY, "--resume", str(tmp_path / "r"), "--data",
                 "synthetic:size=12,train=64,test=32"])
    err = capsys.readouterr().err
    assert code == 2 and "--data synthetic:size=12,train=64,test=32: the resumed run was " \
        "trained with synthetic:size=12,train=256,test=64" in err
    assert "Traceback" not in err


def test_resume_after_hard_kill(tmp_path):
    args = [sys.executable, "-m", "convnet.train", TINY, "--data",
            "synthetic:size=12,train=320,test=64", "--batch-size", "32", "--test-freq", "3"]
    straight = subprocess.run(args + ["--epochs", "2", "--save-dir", str(tmp_path / "a")],
                              env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    d = tmp_path / "b"
    p = subprocess.Popen(args + ["--epochs", "2", "--save-dir", str(d)], env=ENV, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(checkpoint.list_checkpoints(str(d))) < 2:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    cks = checkpoint.list_checkpoints(str(d))
    assert cks and cks[-1][0] < 20, "the run finished before it could be killed"
    resumed = subprocess.run([sys.executable, "-m", "convnet.train", TINY, "--resume", str(d),
                              "--epochs", "2"], env=ENV, cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    m1, a1 = final_arrays(tmp_path / "a")
    m2, a2 = final_arrays(d)
    assert m1["step"] == m2["step"] == 20
    assert_same(a1, a2)


def test_checkpoints_are_npz_and_json_and_only_k_are_kept(tmp_path):
    assert run(tmp_path, "--epochs", "1", "--test-freq", "2", "--keep", "2") == 0
    cks = checkpoint.list_checkpoints(str(tmp_path / "run"))
    assert [s for s, _ in cks] == [6, 8]
    files = sorted(os.listdir(tmp_path / "run"))
    assert files == ["ckpt-00000006.json", "ckpt-00000006.npz", "ckpt-00000008.json",
                     "ckpt-00000008.npz", "log.jsonl"]
    meta = json.load(open(cks[-1][1]))
    assert meta["step"] == 8 and meta["epoch"] == 1 and meta["batch_in_epoch"] == 0
    assert "[conv1]" in meta["def_text"] and meta["seed"] == 0
    with np.load(tmp_path / "run" / "ckpt-00000008.npz", allow_pickle=False) as z:
        assert set(z.files) == {"conv1.w", "conv1.w.inc", "conv1.b", "conv1.b.inc", "fc2.w",
                                "fc2.w.inc", "fc2.b", "fc2.b.inc", "inference.mean"}
    kinds = [json.loads(ln)["kind"] for ln in open(tmp_path / "run" / "log.jsonl")]
    assert kinds[0] == "start" and kinds.count("batch") == 8 and kinds.count("test") == 4


def test_params_file_is_read_again_on_resume(tmp_path, capsys):
    from convnet.layers import REGISTRY
    from convnet.config import load_config
    cfg = load_config(TINY)
    defs, params = [], []
    for spec in cfg.layers:
        keys = REGISTRY[spec.text("type")].PARAM_KEYS
        defs.append(f"[{spec.name}]")
        params.append(f"[{spec.name}]")
        for k, (v, _) in spec.values.items():
            (params if k in keys else defs).append(f"{k}={v}")
    (tmp_path / "d.cfg").write_text("\n".join(defs) + "\n")
    (tmp_path / "p.cfg").write_text("\n".join(params) + "\n")
    base = [str(tmp_path / "d.cfg"), "--data", DATA, "--batch-size", "32"]
    assert main(base + ["--layer-params", str(tmp_path / "p.cfg"), "--epochs", "1",
                        "--save-dir", str(tmp_path / "r")]) == 0
    (tmp_path / "p.cfg").write_text("\n".join(params).replace("epsW=0.0001", "epsW=0.0005")
                                    + "\n")
    capsys.readouterr()
    assert main(base + ["--resume", str(tmp_path / "r"), "--epochs", "2"]) == 0
    assert "lr 0.0005" in capsys.readouterr().err
    # A structural change is refused, naming the key.
    (tmp_path / "d.cfg").write_text("\n".join(defs).replace("filters=8", "filters=6") + "\n")
    assert main(base + ["--resume", str(tmp_path / "r"), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "[conv1] filters: changed since the checkpoint" in err and "Traceback" not in err


def test_test_only_multiview_and_features(tmp_path, capsys):
    assert run(tmp_path, "--epochs", "1") == 0
    capsys.readouterr()
    d = str(tmp_path / "run")
    assert main([TINY, "--resume", d, "--test-only"]) == 0
    assert "top-1 error" in capsys.readouterr().out
    assert main([TINY, "--resume", d, "--test-only", "--multiview-test"]) == 0
    assert "test (10 views)" in capsys.readouterr().out
    path = str(tmp_path / "f.npz")
    assert main([TINY, "--resume", d, "--write-features", "pool1", "--feature-path", path]) == 0
    with np.load(path, allow_pickle=False) as z:
        assert z["features"].shape == (64, 8, 6, 6) and z["labels"].shape == (64,)


@pytest.mark.slow
def test_check_grads_command(capsys):
    assert main([TINY, "--check-grads"]) == 0
    assert "gradient check passed" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["missing.cfg"], "missing.cfg: no such file"),
    ([TINY, "--device", "gpu:0"], "unknown device 'gpu:0'"),
    ([TINY, "--device", "cuda:0"], "cuda"),
    ([TINY, "--layer-params", "nope.cfg"], "nope.cfg: no such layer params file"),
    ([TINY, "--resume", "no-such-run"], "no-such-run: no such checkpoint"),
    ([TINY, "--data", "cifar:/nonexistent"], "/nonexistent"),
    ([TINY, "--write-features", "fc9"], "no layer named 'fc9'"),
    ([os.path.join(ROOT, "layers", "alexnet.cfg"), "--data", "synthetic:size=32,train=64,test=32"],
     "[pool3] inputs: input 'conv5': image 1x1 is smaller than the 3x3 pooling window"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, capsys, args, words):
    code = main(args + ["--save-dir", str(tmp_path / "x")] + (
        ["--data", "synthetic:size=12,train=64,test=32"] if "--data" not in args else []))
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert err.startswith("convnet.train: error:")


def test_config_error_names_file_section_key(tmp_path, capsys):
    bad = tmp_path / "bad.cfg"
    bad.write_text(open(TINY).read().replace("filterSize=3", "filtersize=3"))
    assert main([str(bad), "--data", "synthetic:size=12,train=64,test=32"]) == 2
    err = capsys.readouterr().err
    assert f"{bad} [conv1] filtersize: unknown key for a conv layer" in err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for opt in ("--data", "--save-dir", "--epochs", "--batch-size", "--test-freq", "--device",
                "--resume", "--test-only", "--multiview-test", "--seed", "--write-features",
                "--layer-params", "--check-grads"):
        assert opt in out

"""The command lines as a user meets them: every mistake is one line naming what is wrong, exit
code 2, reported before any side effect (no save directory made, no data read for long, no epoch
trained); --save-dir never mixes two runs; configs found by name; --version; progress output that
fits a terminal and stays line-per-update in a log file."""
import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
from PIL import Image

from convnet import __version__, backends, checkpoint
from convnet.make_data import main as make_data_main
from convnet.shipped import resolve_config, shipped_configs
from convnet.train import Progress, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "layers", "tiny.cfg")
DATA = "synthetic:size=12,train=64,test=32"
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def one_line_error(capsys, code, words):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("convnet.train: error:"), err
    assert words in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("args, words", [
    (["--workers", "-1"], "argument --workers: must be >= 0, got -1"),
    (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["--epochs", "-1"], "argument --epochs: must be >= 1, got -1"),
    (["--test-freq", "-5"], "argument --test-freq: must be >= 0, got -5"),
    (["--keep", "-1"], "argument --keep: must be >= 1, got -1"),
    (["--keep", "0"], "argument --keep: must be >= 1, got 0"),
    (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["--batch-size", "ten"], "argument --batch-size: 'ten' is not an integer"),
    (["--seed", "-3"], "argument --seed: must be >= 0, got -3"),
    (["--print-every", "0"], "argument --print-every: must be >= 1, got 0"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_bad_arguments_are_one_line_before_anything(tmp_path, capsys, args, words):
    with pytest.raises(SystemExit) as e:
        main([TINY, "--data", DATA, "--save-dir", str(tmp_path / "run"), *args])
    err = one_line_error(capsys, e.value.code, words)
    assert err.endswith("(see python -m convnet.train --help)\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, words", [
    # A batch bigger than the training set: refused before the save directory exists.
    (["--batch-size", "65"], "--batch-size 65: the data source has only 64 training images"),
    # No validation split: refused before an epoch is trained.
    (["--data", "synthetic:size=12,train=64,test=0"], "has no validation images"),
    (["--feature-path", "f.npz"], "--feature-path is the output of --write-features"),
    (["--multiview-test", "--batch-size", "8"], "--multiview-test needs a batch size >= 10"),
    (["--resume", "somewhere", "--force"], "--force starts a new run and --resume continues"),
    (["--write-features", "conv1", "--feature-path", os.path.join(TINY, "x.npz")],
     f"--feature-path {os.path.join(TINY, 'x.npz')}: cannot write a file there"),
])
def test_mistakes_found_before_the_save_dir_is_made(tmp_path, capsys, args, words):
    base = [TINY, "--save-dir", str(tmp_path / "run")] + ([] if "--data" in args else
                                                          ["--data", DATA])
    one_line_error(capsys, main(base + args), words)
    assert not (tmp_path / "run").exists()


def test_config_without_a_cost_layer(tmp_path, capsys):
    cfg = tmp_path / "nocost.cfg"
    text = open(TINY).read()
    cfg.write_text(text[:text.index("[logprob]")])
    one_line_error(capsys, main([str(cfg), "--data", DATA, "--save-dir", str(tmp_path / "run")]),
                   "the net has no cost layer")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, value, words", [
    ("CONVNET_CPU_ISA", "sse9", "CONVNET_CPU_ISA=sse9: expected avx512, avx2 or portable"),
    pytest.param("CONVNET_SIMT_ORDER", "sideways", "CONVNET_SIMT_ORDER=sideways",
                 marks=pytest.mark.skipif("emu" not in backends(),
                                          reason="built without the emulated backend, which "
                                                 "alone reads the variable")),
    ("CONVNET_WINOGRAD", "yes", "CONVNET_WINOGRAD must be auto, on or off, got 'yes'"),
])
def test_bad_environment_variable_is_one_line(tmp_path, name, value, words):
    # A subprocess: the backends read these variables once per process.
    r = subprocess.run([sys.executable, "-m", "convnet.train", TINY, "--data", DATA,
                        "--save-dir", str(tmp_path / "run")], env=dict(ENV, **{name: value}),
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and words in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_save_dir_holding_a_run_is_refused_unless_resume_or_force(tmp_path, capsys):
    d = tmp_path / "run"
    args = [TINY, "--data", DATA, "--batch-size", "32", "--save-dir", str(d), "--epochs", "1"]
    assert main(args) == 0
    before = sorted(os.listdir(d))
    log = (d / "log.jsonl").read_text()
    capsys.readouterr()
    # The same command again: refused, nothing touched.
    one_line_error(capsys, main(args), f"--save-dir {d} already holds the run of 1 checkpoint")
    assert sorted(os.listdir(d)) == before and (d / "log.jsonl").read_text() == log
    # --resume continues it (the log grows, one run).
    assert main([TINY, "--resume", str(d), "--epochs", "2"]) == 0
    starts = [json.loads(ln)["kind"] for ln in open(d / "log.jsonl")].count("start")
    assert starts == 1 and checkpoint.list_checkpoints(str(d))[-1][0] == 4
    # --force starts over: the old checkpoints and log are gone, other files stay.
    (d / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(args + ["--force"]) == 0
    assert "--force: deleted the old run" in capsys.readouterr().out
    assert [s for s, _ in checkpoint.list_checkpoints(str(d))] == [2]
    kinds = [json.loads(ln)["kind"] for ln in open(d / "log.jsonl")]
    assert kinds.count("start") == 1 and kinds.count("batch") == 2
    assert (d / "notes.txt").read_text() == "mine"


def test_save_dir_with_other_files_or_a_file(tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_bytes(b"x")
    one_line_error(capsys, main([TINY, "--data", DATA, "--save-dir", str(d)]),
                   f"--save-dir {d} already holds 1 file(s)")
    f = tmp_path / "file"
    f.write_text("")
    one_line_error(capsys, main([TINY, "--data", DATA, "--save-dir", str(f)]),
                   "exists and is not a directory")


def test_resume_of_a_finished_run_needs_more_epochs(tmp_path, capsys):
    d = tmp_path / "run"
    assert main([TINY, "--data", DATA, "--batch-size", "32", "--save-dir", str(d),
                 "--epochs", "1"]) == 0
    capsys.readouterr()
    one_line_error(capsys, main([TINY, "--resume", str(d)]),
                   "has already trained 1 of 1 epochs: give --epochs N with N > 1")


def test_configs_by_name_and_path(tmp_path, capsys):
    assert set(shipped_configs()) >= {"alexnet", "cifar18", "tiny", "tiny-towers"}
    assert resolve_config("tiny") == resolve_config("tiny.cfg") == shipped_configs()["tiny"]
    assert resolve_config(TINY) == TINY
    assert resolve_config("no/such/file.cfg") is None
    assert main(["tiny", "--data", DATA, "--batch-size", "32", "--epochs", "1",
                 "--save-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    one_line_error(capsys, main(["nonet", "--data", DATA]),
                   "nonet: no such file, and no shipped config of that name (shipped: "
                   + ", ".join(sorted(shipped_configs())) + ")")


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"convnet {__version__} ")
    with pytest.raises(SystemExit):
        make_data_main(["--version"])
    assert capsys.readouterr().out.startswith(f"convnet {__version__} ")


def test_notes_and_data_sentence(tmp_path, capsys):
    # alexnet (1000 outputs, designed for 224x224) on the 10-class 64x64 set: two notes. Only the
    # setup runs (--test-only on a fresh net, two validation batches).
    assert main(["alexnet", "--data", "synthetic:size=64,train=16,test=16", "--batch-size", "8",
                 "--test-only"]) == 0
    out = capsys.readouterr().out
    assert "note: the net has 1000 outputs and the data 10 classes" in out
    assert "note: alexnet was designed for 224x224 inputs; these are 64x64" in out
    assert ("data: synthetic:size=64,train=16,test=16: 16 training and 16 validation images in "
            "10 classes, 64x64 crops, no loader processes") in out


def read_pty(fd):
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode()


def test_progress_on_an_80_column_terminal_is_one_line_in_place():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    stream = os.fdopen(slave, "w", encoding="utf-8")
    try:
        bar = Progress(3, 90, 0, 500, every=50, stream=stream)
        text = ""
        for done in range(1, 41):
            bar.update(done, 128, 3725.0, "logprob 6.876 top1 0.998 top5 0.991 lr 0.01")
            text += read_pty(master) if done % 10 == 0 else ""
        bar.close()
        stream.flush()
        text += read_pty(master)
    finally:
        stream.close()
        os.close(master)
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    assert lines and max(len(ln) for ln in lines) <= 80, max(lines, key=len)
    assert lines[-1].startswith("epoch 3/90   8%|") and "40/500, " in lines[-1]
    assert "ETA 1:02:05" in lines[-1]
    assert text.count("\n") == 1  # one line, updated in place; the newline at close


def test_progress_in_a_file_is_one_line_per_n_batches():
    stream = io.StringIO()
    bar = Progress(1, 2, 0, 120, every=50, stream=stream)
    for done in range(1, 121):
        bar.update(done, 32, 10.0, "logprob 2.3")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/2 batch 50/120", "epoch 1/2 batch 100/120",
                                                  "epoch 1/2 batch 120/120"]
    assert "img/s, ETA 0:00:10, logprob 2.3" in lines[-1]


@pytest.mark.parametrize("args, words", [
    (["--size", "0"], "argument --size: must be >= 8, got 0"),
    (["--size", "-4"], "argument --size: must be >= 8, got -4"),
    (["--shard-size", "0"], "argument --shard-size: must be >= 1, got 0"),
    (["--workers", "-2"], "argument --workers: must be >= 0, got -2"),
])
def test_make_data_argument_errors(tmp_path, capsys, args, words):
    (tmp_path / "src" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        make_data_main([str(tmp_path / "src"), str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and words in err
    assert err.startswith("convnet.make_data: error:")
    assert not (tmp_path / "out").exists()


def test_make_data_paths_checked_first(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    (tmp_path / "src").mkdir()
    cases = [([str(tmp_path / "nope"), str(tmp_path / "out")], "no such directory"),
             ([str(f), str(tmp_path / "out")], "not a directory"),
             ([str(tmp_path / "src"), str(f)], "exists and is not a directory"),
             ([str(tmp_path / "src"), str(tmp_path / "out"), "--val-labels", "nope.txt"],
              "--val-labels nope.txt: no such file")]
    for args, words in cases:
        assert make_data_main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_make_data_progress_in_a_log_is_one_line_per_shard(tmp_path, capsys):
    rs = np.random.RandomState(0)
    for split, n in (("train", 5), ("val", 2)):
        for c in ("a", "b"):
            d = tmp_path / "src" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rs.randint(0, 255, (10, 14, 3), np.uint8)).save(d / f"{i}.png")
    assert make_data_main([str(tmp_path / "src"), str(tmp_path / "out"), "--size", "8",
                           "--shard-size", "4", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [
        "make_data: train-00000 written (4 images, 0 skipped); 4/14 images done",
        "make_data: train-00001 written (4 images, 0 skipped); 8/14 images done",
        "make_data: train-00002 written (2 images, 0 skipped); 10/14 images done",
        "make_data: test-00000 written (4 images, 0 skipped); 14/14 images done"]


def test_cifar_local_trains_on_a_cifar_folder(tmp_path, capsys):
    # cuda-convnet's 11% net (local layers) on CIFAR-10 python batches: a small generated folder
    # in the format of the real one, one epoch of two batches.
    import pickle
    rs = np.random.RandomState(0)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name, n in (("data_batch_1", 32), ("test_batch", 16)):
        batch = {"data": rs.randint(0, 256, (n, 3072)).astype(np.uint8),
                 "labels": rs.randint(0, 10, n).tolist()}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]},
                                                  protocol=2))
    assert main(["cifar-local", "--data", f"cifar:{d}", "--batch-size", "16", "--epochs", "1",
                 "--save-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "32 training and 16 validation images in 10 classes, 32x32 crops" in out
    table = out[out.index("local3"):]
    assert "64x8x8" in table and "2,363,392" in table  # 8x8 positions x (64*9*64 + 64)
    assert "3,672,906" in out
    assert any(f.startswith("ckpt-") for f in os.listdir(tmp_path / "run"))

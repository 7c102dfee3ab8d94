"""Checkpoint integrity: a checksum per array, every JSON field checked, damaged checkpoints
reported in one line, the previous good one used instead (and said), verification without
training."""
import json
import os
import shutil

import numpy as np
import pytest

from convnet import checkpoint
from convnet.checkpoint import CheckpointError
from convnet.train import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "layers", "tiny.cfg")
DATA = "synthetic:size=12,train=256,test=64"


def _meta(step=1):
    return {"epoch": 0, "batch_in_epoch": step, "seed": 0, "best": None, "schedules": {},
            "def_path": "x.cfg", "def_text": "[a]\ntype=data\n", "params_path": None,
            "params_text": None, "options": {"seed": 0}}


def _arrays(rng):
    return {"w": rng.standard_normal((3, 5)).astype(np.float32),
            "w.inc": np.zeros((3, 5), np.float32), "b": rng.standard_normal(7).astype(np.float32)}


def _two_checkpoints(directory):
    rng = np.random.default_rng(0)
    older = checkpoint.save(str(directory), 4, _arrays(rng), _meta(4))
    newer = checkpoint.save(str(directory), 8, _arrays(rng), _meta(8))
    return older, newer


def test_save_records_a_checksum_per_array_and_load_checks_them(tmp_path):
    rng = np.random.default_rng(1)
    arrays = _arrays(rng)
    path = checkpoint.save(str(tmp_path), 3, arrays, _meta())
    meta = json.load(open(path))
    assert meta["format"] == checkpoint.FORMAT
    assert set(meta["checksums"]) == set(arrays)
    assert meta["checksums"]["w"]["shape"] == [3, 5]
    assert meta["checksums"]["w"]["dtype"] == "<f4"
    m, a = checkpoint.verify(path)
    for k in arrays:
        np.testing.assert_array_equal(a[k], arrays[k])
    assert m["step"] == 3 and m["path"] == path


def _data_offset(npz, name):
    """Where the bytes of array `name` lie in the (uncompressed) npz file."""
    with np.load(npz) as z:
        data = z[name].tobytes()
    at = open(npz, "rb").read().find(data)
    assert at > 0
    return at + len(data) // 2


def _flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


@pytest.mark.parametrize("damage", ["truncate-npz", "flip-npz-data", "flip-npz-header",
                                    "delete-npz", "truncate-json", "missing-field",
                                    "mistyped-field", "mistyped-option", "json-not-object",
                                    "path-in-arrays", "swap-npz", "checksum-changed"])
def test_damage_is_one_line_and_the_previous_checkpoint_is_used(tmp_path, damage):
    older, newer = _two_checkpoints(tmp_path)
    npz = newer[:-5] + ".npz"
    meta = json.load(open(newer))
    if damage == "truncate-npz":
        os.truncate(npz, os.path.getsize(npz) // 2)
    elif damage == "flip-npz-data":
        _flip_byte(npz, _data_offset(npz, "b"))
    elif damage == "flip-npz-header":
        _flip_byte(npz, 2)
    elif damage == "delete-npz":
        os.remove(npz)
    elif damage == "truncate-json":
        os.truncate(newer, os.path.getsize(newer) - 20)
    elif damage == "swap-npz":
        shutil.copy(older[:-5] + ".npz", npz)
    else:
        if damage == "missing-field":
            del meta["epoch"]
        elif damage == "mistyped-field":
            meta["step"] = "8"
        elif damage == "mistyped-option":
            meta["options"]["batch_size"] = -3
        elif damage == "json-not-object":
            meta = [meta]
        elif damage == "path-in-arrays":
            meta["arrays"] = "../" + meta["arrays"]
        elif damage == "checksum-changed":
            meta["checksums"]["b"]["crc32"] ^= 1
        json.dump(meta, open(newer, "w"))
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(newer, checkpoint.RUN_FIELDS)
    assert "\n" not in str(e.value) and newer.rsplit(".", 1)[0] in str(e.value)
    m, a = checkpoint.load(str(tmp_path), checkpoint.RUN_FIELDS)
    assert m["path"] == older and m["step"] == 4
    assert [p for p, _ in m["damaged"]] == [newer]
    assert "damaged" in m["damaged"][0][1] or "not a convnet checkpoint" in m["damaged"][0][1]


def test_no_good_checkpoint_is_one_line(tmp_path):
    older, newer = _two_checkpoints(tmp_path)
    for p in (older, newer):
        os.truncate(p[:-5] + ".npz", 10)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(str(tmp_path))
    assert "no good checkpoint" in str(e.value) and "\n" not in str(e.value)


def test_a_checkpoint_written_before_checksums_still_loads(tmp_path):
    path = checkpoint.save(str(tmp_path), 2, _arrays(np.random.default_rng(2)), _meta())
    meta = json.load(open(path))
    del meta["checksums"]
    meta["format"] = "convnet-checkpoint-1"
    json.dump(meta, open(path, "w"))
    m, a = checkpoint.load(path)
    assert set(a) == {"w", "w.inc", "b"}


def test_verify_command(tmp_path, capsys):
    older, newer = _two_checkpoints(tmp_path)
    assert checkpoint.main(["--verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("good (step") == 2 and "checksums match" in out
    _flip_byte(newer[:-5] + ".npz", _data_offset(newer[:-5] + ".npz", "w"))
    assert checkpoint.main(["--verify", str(tmp_path), older]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and sum("damaged" in ln for ln in lines) == 1


def test_training_resumes_from_the_previous_good_checkpoint(tmp_path, capsys):
    d = tmp_path / "r"
    args = [TINY, "--data", DATA, "--batch-size", "32", "--test-freq", "4"]
    assert main(args + ["--epochs", "2", "--save-dir", str(tmp_path / "straight")]) == 0
    assert main(args + ["--epochs", "1", "--save-dir", str(d)]) == 0
    newest = checkpoint.latest(str(d))
    os.truncate(newest[:-5] + ".npz", 100)
    capsys.readouterr()
    assert main([TINY, "--resume", str(d), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"warning: {newest[:-5]}.npz: damaged" in out
    assert "resuming from" in out and "ckpt-00000004.json instead" in out
    assert f"set the damaged {newest} aside" in out
    assert os.path.exists(newest + checkpoint.DAMAGED_SUFFIX)
    _, a1 = checkpoint.load(str(tmp_path / "straight"))
    m2, a2 = checkpoint.load(str(d))
    assert m2["step"] == 16 and not m2["damaged"]
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k], err_msg=k)


def test_training_stops_in_one_line_when_no_checkpoint_is_good(tmp_path, capsys):
    d = tmp_path / "r"
    assert main([TINY, "--data", DATA, "--batch-size", "32", "--epochs", "1",
                 "--save-dir", str(d)]) == 0
    for _, j in checkpoint.list_checkpoints(str(d)):
        with open(j, "w") as f:
            f.write("{")
    capsys.readouterr()
    assert main([TINY, "--resume", str(d), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no good checkpoint" in err and "Traceback" not in err


def test_a_checkpoint_of_arrays_alone_loads_but_does_not_resume_a_run(tmp_path):
    path = checkpoint.save(str(tmp_path), 1, _arrays(np.random.default_rng(3)), {"from": "x"})
    meta, arrays = checkpoint.load(path)
    assert meta["from"] == "x" and set(arrays) == {"w", "w.inc", "b"}
    with pytest.raises(CheckpointError, match="field 'epoch' is missing"):
        checkpoint.load(path, checkpoint.RUN_FIELDS)

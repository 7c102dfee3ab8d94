"""Exact resume: every option a checkpoint stores is restored by a bare ``--resume DIR``, so 2N
steps straight equal N steps and N resumed steps, bit for bit, with a plateau schedule whose
drops depend on when the tests happen and what they measure; options that would change the
run's course are refused at resume in one line, the others honoured and said."""
import json
import os

import numpy as np
import pytest

from convnet import checkpoint
from convnet.train import EXACT_OPTIONS, OPTION_DEFAULTS, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "layers", "tiny.cfg")
# Rates divided by 2 whenever the validation error had no new best at the last test.
PLATEAU = "plateau[base=0.02;factor=0.5;patience=1;maxDrops=8]"
# 8 steps of 32 images per epoch (4 of 64).
DATA = "synthetic:size=12,train=256,test=64"


@pytest.fixture(scope="module")
def plateau_cfg(tmp_path_factory):
    text = open(TINY).read()
    for key in ("epsW", "epsB"):
        text = "\n".join(f"{key}={PLATEAU}" if ln.startswith(f"{key}=") else ln
                         for ln in text.splitlines())
    path = tmp_path_factory.mktemp("cfg") / "tiny-plateau.cfg"
    path.write_text(text + "\n")
    return str(path)


# One run per stored option, with that option away from its default (the others at values a
# bare resume would otherwise also get wrong: the data and batch size are never the defaults).
CASES = {
    "data": ["--data", "synthetic:size=12,train=320,test=64,seed=3"],
    "seed": ["--seed", "7"],
    "batch_size": ["--batch-size", "16"],
    "test_freq": ["--test-freq", "3"],
    "multiview_test": ["--multiview-test"],
    "device": ["--device", "emu:0"],
    "keep": ["--keep", "1"],
    "epochs": [],
}


def test_every_stored_option_has_a_case():
    assert set(CASES) == set(OPTION_DEFAULTS)


def _train(cfg, save_dir, opts, *extra):
    base = [cfg, "--save-dir", str(save_dir)]
    if "--data" not in opts:
        base += ["--data", DATA]
    if "--batch-size" not in opts:
        base += ["--batch-size", "32"]
    if "--test-freq" not in opts:
        base += ["--test-freq", "2"]
    assert main(base + list(opts) + list(extra)) == 0


def _drops(directory):
    log = [json.loads(ln) for ln in open(os.path.join(directory, "log.jsonl"))]
    return [r["step"] for r in log if r["kind"] == "test" and r["lr_dropped"]]


@pytest.mark.parametrize("option", sorted(CASES))
def test_bare_resume_restores_every_option(tmp_path, plateau_cfg, option, capsys):
    opts = CASES[option]
    if option == "device":
        pytest.importorskip("convnet._emu")
    straight, split = tmp_path / "straight", tmp_path / "split"
    _train(plateau_cfg, straight, opts, "--epochs", "2")
    if option == "epochs":
        # The stored --epochs: the run is cut at its middle checkpoint and resumed without it.
        _train(plateau_cfg, split, opts, "--epochs", "2", "--keep", "100")
        cks = checkpoint.list_checkpoints(str(split))
        middle = next(s for s, _ in cks if s >= cks[-1][0] // 2)
        for s, j in cks:
            if s > middle:
                os.remove(j)
        resume = []
    else:
        _train(plateau_cfg, split, opts, "--epochs", "1")
        resume = ["--epochs", "2"]
    capsys.readouterr()
    # Nothing but the run: every stored option comes from the checkpoint.
    assert main([plateau_cfg, "--resume", str(split)] + resume) == 0
    out = capsys.readouterr().out
    notes = [ln for ln in out.splitlines() if ln.startswith("note: --")]
    assert "resumed from" in out
    assert notes == (["note: --epochs 2 (the run was saved with 1)"] if resume else [])
    m1, a1 = checkpoint.load(str(straight))
    m2, a2 = checkpoint.load(str(split))
    if option == "epochs":
        m2["options"]["keep"] = m1["options"]["keep"]  # kept every checkpoint to cut one out
    assert m1["step"] == m2["step"] and m1["options"] == m2["options"]
    assert a1.keys() == a2.keys()
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k], err_msg=k)
    # The plateau schedule did divide the rates, at the same tests, in both runs.
    assert _drops(straight) and _drops(straight) == _drops(split)
    if option == "keep":
        assert len(checkpoint.list_checkpoints(str(split))) == 1


@pytest.mark.parametrize("option, given", [
    ("data", ["--data", "synthetic:size=12,train=320,test=64,seed=3"]),
    ("seed", ["--seed", "1"]),
    ("batch_size", ["--batch-size", "16"]),
    ("test_freq", ["--test-freq", "5"]),
    ("multiview_test", ["--multiview-test"]),
])
def test_a_changed_trajectory_option_is_refused_in_one_line(tmp_path, option, given, capsys):
    assert option in EXACT_OPTIONS
    _train(TINY, tmp_path / "r", [], "--epochs", "1")
    capsys.readouterr()
    assert main([TINY, "--resume", str(tmp_path / "r"), "--epochs", "2"] + given) == 2
    err = capsys.readouterr().err
    flag = "--" + option.replace("_", "-")
    assert err.count("\n") == 1 and err.startswith(f"convnet.train: error: {flag}")
    assert "the resumed run was trained with" in err and "Traceback" not in err


def test_the_same_value_again_is_accepted_and_others_are_honoured(tmp_path, capsys):
    _train(TINY, tmp_path / "r", [], "--epochs", "1", "--seed", "3")
    capsys.readouterr()
    assert main([TINY, "--resume", str(tmp_path / "r"), "--epochs", "2", "--seed", "3",
                 "--batch-size", "32", "--keep", "1", "--device", "cpu:1"]) == 0
    out = capsys.readouterr().out
    assert "note: --epochs 2 (the run was saved with 1)" in out
    assert "note: --keep 1 (the run was saved with 3)" in out
    assert "note: --device cpu:1 (the run was saved with cpu)" in out
    meta, _ = checkpoint.load(str(tmp_path / "r"))
    assert meta["options"]["device"] == "cpu:1" and meta["options"]["keep"] == 1
    assert len(checkpoint.list_checkpoints(str(tmp_path / "r"))) == 1


def test_testing_a_checkpoint_may_use_other_data(tmp_path, capsys):
    _train(TINY, tmp_path / "r", [], "--epochs", "1")
    capsys.readouterr()
    assert main([TINY, "--resume", str(tmp_path / "r"), "--test-only", "--data",
                 "synthetic:size=12,train=64,test=32,seed=5", "--batch-size", "8"]) == 0
    assert "(32 images)" in capsys.readouterr().out

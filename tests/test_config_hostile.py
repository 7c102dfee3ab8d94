"""Hostile configs: bytes that are not UTF-8, integers a config should not spell that way, sizes
far beyond any machine, nets larger than this machine's memory. Each is one ConfigError naming
the file (and line, or section and key), before any buffer is allocated."""
import os

import pytest

from convnet import memory
from convnet.config import ConfigError, load_config
from convnet.net import Net
from convnet.train import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "layers", "tiny.cfg")
TINY_TEXT = open(TINY, encoding="utf-8").read()


def _build(tmp_path, text, name="net.cfg", image=(3, 12, 12), batch=8):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return Net(load_config(str(path)), image_shape=image, device="cpu", batch_size=batch)


def test_a_non_utf8_byte_names_file_line_and_column(tmp_path):
    lines = TINY_TEXT.encode().split(b"\n")
    lines[5] = b"# caf\xe9 (Latin-1)"
    with pytest.raises(ConfigError) as e:
        _build(tmp_path, b"\n".join(lines))
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "net.cfg")) and "line 6, column 6" in msg
    assert "0xe9 is not UTF-8" in msg


def test_utf8_text_in_comments_is_fine(tmp_path):
    net = _build(tmp_path, "# Größe: 12×12 — fine\n" + TINY_TEXT)
    assert net.total_params > 0


@pytest.mark.parametrize("spelling", ["1_6", "١٦", "16.0", "0x10", " 1e1", "16L", "+"])
def test_integers_are_plain_ascii_decimal(tmp_path, spelling):
    with pytest.raises(ConfigError) as e:
        _build(tmp_path, TINY_TEXT.replace("outputs=10", f"outputs={spelling}"))
    assert "[fc2] outputs: expected an integer (ASCII decimal digits)" in str(e.value)


@pytest.mark.parametrize("key, value, words", [
    ("outputs=10", "outputs=4294967296", "[fc2] outputs: must be <= 2147483647"),
    ("padding=1", "padding=10000000000000000000000", "[conv1] padding: must be <= 2147483647"),
    ("filters=8", "filters=-8", "[conv1] filters: must be >= 1"),
    ("stride=2", "stride=0", "[pool1] stride: must be >= 1"),
    ("stride=2", "stride=4", "[pool1] stride: the last of the 4 windows of the 12-pixel input "
                             "would start at pixel 12, past its edge"),
    ("padding=1", "padding=2147483647", "[conv1] inputs: output shape (8, 4294967304, "
                                        "4294967304) has a dimension above 2147483647"),
    ("epsW=0.001", "epsW=1_0.5", "[fc2] epsW: expected a number"),
    ("epsW=0.001", "epsW=nan", "[fc2] epsW: expected a number"),
    ("epsW=0.001", "epsW=plateau[base=0.01;patience=1.5]", "patience"),
    ("scale=0.001", "scale=inf", "[rnorm1] scale: expected a number"),
    ("scale=0.001", "scale=1e300", "[rnorm1] scale: '1e300' is outside float32's range"),
    ("minDiv=2", "minDiv=1.1e-80", "[rnorm1] minDiv: '1.1e-80' is outside float32's range"),
    ("epsW=0.001", "epsW=exp[base=1e39;tgtFactor=10]", "outside float32's range"),
    ("neuron=relu", "neuron=tanh[١,2]", "[conv1] neuron: bad neuron argument"),
])
def test_values_out_of_range_or_misspelled(tmp_path, key, value, words):
    assert key in TINY_TEXT
    with pytest.raises(ConfigError) as e:
        _build(tmp_path, TINY_TEXT.replace(key, value, 1))
    assert words in str(e.value)


@pytest.mark.parametrize("key, value", [
    ("padding=1", "padding=100000"),            # a 200,000 x 200,000 conv output
    ("outputs=10", "outputs=2000000000"),       # 8 GB of fc weights per input pixel
    ("filters=8", "filters=100000000"),
])
def test_a_net_larger_than_memory_is_refused_before_allocation(tmp_path, key, value):
    with pytest.raises(ConfigError) as e:
        _build(tmp_path, TINY_TEXT.replace(key, value, 1))
    msg = str(e.value)
    have = memory.gib(memory.host_memory_bytes())
    assert "the net needs at least" in msg and f"this machine has {have}" in msg


def test_the_memory_estimate_counts_the_buffers_the_net_allocates(tmp_path):
    net = _build(tmp_path, TINY_TEXT, batch=16)
    need = sum(memory.needed_bytes(net).values())
    weights = sum(t.numpy().nbytes for p in net.params for t in (p.value, p.inc, p.grad))
    outputs = sum(b.flat.numpy().nbytes for b in list(net.y.values()) + list(net.dy.values()))
    neurons = sum(b.flat.numpy().nbytes for L in net.layers for b in
                  (getattr(L, "pre", None), getattr(L, "dpre", None)) if b is not None)
    assert need == weights + outputs + neurons


def test_the_trainer_reports_it_in_one_line(tmp_path, capsys):
    path = tmp_path / "big.cfg"
    path.write_text(TINY_TEXT.replace("outputs=10", "outputs=2000000000"))
    code = main([str(path), "--data", "synthetic:size=12,train=64,test=32",
                 "--save-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "the net needs at least" in err
    assert not (tmp_path / "x").exists() or not os.listdir(tmp_path / "x")

"""Config files: cuda-convnet's syntax (tests/test_fixtures.py loads whole nets), errors name file /
section / key, schedules."""
import math
import os

import pytest

from convnet.config import ConfigError, Schedule, load_config
from convnet.net import Net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = os.path.join(ROOT, "layers")


def shapes(net):
    return {L.name: L.out_shape for L in net.layers}


def build(tmp_path, text, params=None, image_shape=(3, 12, 12)):
    d = tmp_path / "net.cfg"
    d.write_text(text)
    p = None
    if params is not None:
        p = tmp_path / "params.cfg"
        p.write_text(params)
    return Net(load_config(str(d), p and str(p)), image_shape=image_shape, batch_size=4)


HEAD = "[data]\ntype=data\ndataIdx=0\n\n[labels]\ntype=data\ndataIdx=1\n\n"
LEARN = "epsW=0.01\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0\n"
TAIL = "[probs]\ntype=softmax\ninputs=fc\n\n[cost]\ntype=cost.logreg\ninputs=labels,probs\n"


def test_unsupported_layer_type_is_named(tmp_path):
    # A type of cuda-convnet's that convnet lacks is not called a typo; an unknown one is.
    for kind, words in (("eltmax", "layer type 'eltmax': valid cuda-convnet syntax this version "
                                   "does not support"),
                        ("lokal", "unknown layer type 'lokal' (a typo?)")):
        text = HEAD + ("[conv1]\ntype=conv\ninputs=data\nfilters=4\nfilterSize=3\n" + LEARN
                       + f"\n[odd]\ntype={kind}\ninputs=conv1\n")
        with pytest.raises(ConfigError) as e:
            build(tmp_path, text)
        msg = str(e.value)
        assert "net.cfg [odd] type:" in msg and words in msg
        assert "local" in msg and "conv" in msg  # lists the supported types


def test_valid_cuda_convnet_keys_left_out_are_not_typos(tmp_path):
    base = ["type=conv", "inputs=data", "filters=4", "filterSize=3", LEARN.strip()]
    for extra, key in (("randSparse=1", "randSparse"),
                       ("randSparse=true\ngroups=2\nfilterChannels=2", "filterChannels"),
                       ("initWFunc=init.gauss", "initWFunc"), ("updatePeriod=2", "updatePeriod"),
                       ("wball=0.1", "wball")):
        text = HEAD + "[conv1]\n" + "\n".join(base + [extra]) + "\n"
        with pytest.raises(ConfigError) as e:
            build(tmp_path, text)
        assert e.value.key == key
        assert "valid cuda-convnet syntax this version does not support" in str(e.value)
        assert "typo" not in str(e.value)
    text = HEAD + "[conv1]\n" + "\n".join(base + ["filtrSize=3"]) + "\n"
    with pytest.raises(ConfigError, match=r"\[conv1\] filtrSize: unknown key for a conv layer "
                                          r"\(a typo\?\)"):
        build(tmp_path, text)


def test_colon_lines_and_legacy_spellings(tmp_path):
    # `key: value` lines; rnorm's window as sizeX; pooling windows starting before the image.
    text = HEAD.replace("type=data\ndataIdx=1", "type: data\ndataIdx : 1") + (
        "[pool]\ntype: pool\ninputs: data\npool: avg\nsizeX: 3\nstride: 2\nstart: -1\n\n"
        "[rnorm]\ntype=rnorm\ninputs=pool\nsizeX=3\nscale=0.001\npow=0.75\n\n"
        "[fc]\ntype=fc\ninputs=rnorm\noutputs=10\n" + LEARN.replace("=", ": ") + "\n" + TAIL)
    net = build(tmp_path, text, image_shape=(3, 11, 12))
    # Windows at -1, 1, ..., 9 (rows) and 11 (columns: 1 + ceil((12 + 1 - 3) / 2) = 6).
    assert shapes(net)["pool"] == (3, 6, 6) and net.by_name["rnorm"].cfg["size"] == 3
    assert net.by_name["labels"].cfg["dataIdx"] == 1 and net.by_name["fc"].cfg["momW"] == (0.9,)
    bad = [("start: 1", "start", "must be in -2..0"), ("start: -3", "start", "must be in -2..0"),
           ("sizeX: 3\nsize: 3", "sizeX", "not both")]
    for line, key, words in bad:
        layer = "pool" if key == "start" else "rnorm"
        t = text.replace("start: -1", line) if layer == "pool" else \
            text.replace("sizeX=3\nscale", line.replace(": ", "=") + "\nscale")
        with pytest.raises(ConfigError) as e:
            build(tmp_path, t, image_shape=(3, 11, 12))
        assert f"[{layer}] {key}:" in str(e.value) and words in str(e.value)


def test_per_input_lists_name_the_input_count(tmp_path):
    text = HEAD + ("[fc]\ntype=fc\ninputs=data,data\noutputs=10\ninitW=0.8,0.008,0.1\n" + LEARN
                   + "\n" + TAIL)
    with pytest.raises(ConfigError, match=r"\[fc\] initW: 3 values for 2 inputs \(data,data\)"):
        build(tmp_path, text)


def test_paper_alexnet_config():
    net = Net(load_config(os.path.join(LAYERS, "alexnet.cfg")), image_shape=(3, 224, 224),
              batch_size=2)
    s = shapes(net)
    assert s["conv1"] == (96, 55, 55) and s["conv2"] == (256, 27, 27)
    assert s["conv5"] == (256, 13, 13) and s["pool3"] == (256, 6, 6) and s["fc8"] == (1000,)
    assert net.by_name["conv2"].ws[0].shape == (48, 5, 5, 256)  # two groups of 48 input maps
    assert net.by_name["conv3"].ws[0].shape == (256, 3, 3, 384)  # conv3 reads both towers
    table = net.table()
    assert "60,965,224" in table  # the paper's "60 million parameters"
    assert abs(net.total_flops / 1e9 - 1.457) < 0.01
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        assert net.by_name[name].cfg["initB"] == 1
    for name in ("conv1", "conv3", "fc8"):
        assert net.by_name[name].cfg["initB"] == 0
    assert net.by_name["conv1"].cfg["epsW"][0].kind == "plateau"


def test_table_columns():
    net = Net(load_config(os.path.join(LAYERS, "tiny.cfg")), image_shape=(3, 12, 12),
              batch_size=2)
    lines = net.table().splitlines()
    assert lines[0].split()[:7] == ["layer", "type", "inputs", "output", "params", "MFLOP"] \
        or lines[0].split()[:6] == ["layer", "type", "inputs", "output", "params", "MFLOP"]
    conv = next(ln for ln in lines if ln.startswith("conv1"))
    assert "8x12x12" in conv and "224" in conv  # 3*3*3*8 + 8 parameters
    assert lines[-1].startswith("total")


def test_one_file_or_two_files_give_the_same_net(tmp_path):
    one = Net(load_config(os.path.join(LAYERS, "tiny.cfg")), image_shape=(3, 12, 12),
              batch_size=2)
    # Split tiny.cfg into a definition and a params file.
    from convnet.layers import REGISTRY
    cfg = load_config(os.path.join(LAYERS, "tiny.cfg"))
    defs, params = [], []
    for spec in cfg.layers:
        cls = REGISTRY[spec.text("type")]
        defs.append(f"[{spec.name}]")
        params.append(f"[{spec.name}]")
        for k, (v, _) in spec.values.items():
            (params if k in cls.PARAM_KEYS else defs).append(f"{k}={v}")
    (tmp_path / "d.cfg").write_text("\n".join(defs) + "\n")
    (tmp_path / "p.cfg").write_text("\n".join(params) + "\n")
    two = Net(load_config(str(tmp_path / "d.cfg"), str(tmp_path / "p.cfg")),
              image_shape=(3, 12, 12), batch_size=2)
    a, b = one.state_arrays(), two.state_arrays()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("bad, key, words", [
    ("filtrSize=3", "filtrSize", "unknown key for a conv layer"),
    ("filters=abc", "filters", "expected an integer"),
    ("filters=0", "filters", "must be >= 1"),
    ("neuron=relux", "neuron", "unknown neuron"),
    ("neuron=tanh[1]", "neuron", "takes 2 argument"),
    ("epsW=dexp[base=0.01;tgtFactr=2]", "epsW", "unknown schedule argument"),
    ("epsW=fast", "epsW", "expected a number"),
    ("sharedBiases=perhaps", "sharedBiases", "expected true/false"),
    ("gpu=0,0", "gpu", "different devices"),
])
def test_bad_keys_name_file_section_key(tmp_path, bad, key, words):
    lines = ["type=conv", "inputs=data", "filters=4", "filterSize=3", LEARN.strip()]
    k = bad.split("=")[0]
    lines = [ln for ln in lines if not ln.startswith(k + "=")] + [bad]
    text = HEAD + "[conv1]\n" + "\n".join(lines) + "\n\n[fc]\ntype=fc\ninputs=conv1\noutputs=10\n" \
        + LEARN + "\n" + TAIL
    with pytest.raises(ConfigError) as e:
        build(tmp_path, text)
    assert e.value.section == "conv1" and e.value.key == key
    assert e.value.file.endswith("net.cfg")
    assert f"net.cfg [conv1] {key}:" in str(e.value) and words in str(e.value)


def test_tuning_keys_are_accepted(tmp_path):
    text = HEAD + ("[conv1]\ntype=conv\ninputs=data\nfilters=4\nfilterSize=3\nsumWidth=4\n"
                   "partialSum=4\n" + LEARN + "\n[fc]\ntype=fc\ninputs=conv1\noutputs=10\n"
                   + LEARN + "\n" + TAIL)
    build(tmp_path, text)


def test_missing_learning_rate_points_at_params_file(tmp_path):
    text = HEAD + "[fc]\ntype=fc\ninputs=data\noutputs=10\n\n" + TAIL
    with pytest.raises(ConfigError, match=r"\[fc\] epsW: a fc layer needs this key"):
        build(tmp_path, text)


def test_params_file_errors_name_the_params_file(tmp_path):
    text = HEAD + "[fc]\ntype=fc\ninputs=data\noutputs=10\n\n" + TAIL
    with pytest.raises(ConfigError) as e:
        build(tmp_path, text, params="[fc]\n" + LEARN.replace("momW=0.9", "momW=lots"))
    assert "params.cfg [fc] momW: expected a number" in str(e.value)


def test_shape_mismatch_names_both_layers(tmp_path):
    text = HEAD + ("[conv1]\ntype=conv\ninputs=data\nchannels=5\nfilters=4\nfilterSize=3\n"
                   + LEARN + "\n[fc]\ntype=fc\ninputs=conv1\noutputs=10\n" + LEARN + "\n" + TAIL)
    with pytest.raises(ConfigError) as e:
        build(tmp_path, text)
    assert "[conv1] inputs" in str(e.value) and "'data'" in str(e.value)
    assert "3 channels" in str(e.value) and "channels=5" in str(e.value)
    text = HEAD + ("[fc]\ntype=fc\ninputs=data\noutputs=10\n" + LEARN
                   + "\n[conv1]\ntype=conv\ninputs=fc\nfilters=4\nfilterSize=3\n" + LEARN
                   + "\n[probs]\ntype=softmax\ninputs=fc\n\n[cost]\ntype=cost.logreg\n"
                   "inputs=labels,probs\n")
    with pytest.raises(ConfigError, match=r"\[conv1\] inputs: input 'fc': a conv layer needs "
                                          r"images"):
        build(tmp_path, text)


def test_graph_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"\[fc\] inputs: no layer named 'dta'"):
        build(tmp_path, HEAD + "[fc]\ntype=fc\ninputs=dta\noutputs=10\n" + LEARN + "\n" + TAIL)
    cyc = HEAD + ("[a]\ntype=eltsum\ninputs=data,b\n\n[b]\ntype=eltsum\ninputs=a\n\n"
                  "[fc]\ntype=fc\ninputs=b\noutputs=10\n" + LEARN + "\n" + TAIL)
    with pytest.raises(ConfigError, match="form a cycle"):
        build(tmp_path, cyc)
    with pytest.raises(ConfigError, match=r"\[data\]: section defined twice"):
        build(tmp_path, HEAD + HEAD)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "missing.cfg"))
    with pytest.raises(ConfigError, match=r"\[fc\] outputs: key given twice"):
        build(tmp_path, HEAD + "[fc]\ntype=fc\ninputs=data\noutputs=10\noutputs=3\n")


def test_softmax_must_feed_only_its_cost(tmp_path):
    text = HEAD + ("[fc]\ntype=fc\ninputs=data\noutputs=10\n" + LEARN + "\n" + TAIL
                   + "\n[extra]\ntype=eltsum\ninputs=probs\n\n[fc2]\ntype=fc\ninputs=extra\n"
                   "outputs=10\n" + LEARN + "\n[probs2]\ntype=softmax\ninputs=fc2\n\n"
                   "[cost2]\ntype=cost.logreg\ninputs=labels,probs2\n")
    with pytest.raises(ConfigError, match="also feeds extra"):
        build(tmp_path, text)


def test_schedules(tmp_path):
    from convnet.config import LayerSpec, parse_schedule

    def sched(text):
        spec = LayerSpec("conv1", 0, "f.cfg")
        spec.values["epsW"] = (text, "f.cfg")
        return parse_schedule(spec, "epsW")

    assert sched("0.01").value(5, 0.5) == 0.01
    assert sched("const[base=0.02]").value(0, 0.9) == 0.02
    lin = sched("linear[base=0.01;tgtFactor=10]")
    assert math.isclose(lin.value(0, 0.5), 0.0055)
    ex = sched("exp[base=0.01;tgtFactor=100]")
    assert math.isclose(ex.value(0, 0.5), 0.001)
    d = sched("dexp[base=0.01;tgtFactor=250;numSteps=4]")
    vals = [d.value(0, p) for p in (0.0, 0.3, 0.6, 0.9, 1.0)]
    assert math.isclose(vals[0], 0.01) and math.isclose(vals[-1], 0.01 / 250)
    assert vals == sorted(vals, reverse=True) and len(set(vals)) == 4
    st = sched("step[base=0.01;epochs=30,60,80;factor=0.1]")
    assert [round(st.value(e, 0), 6) for e in (0, 29.9, 30, 61, 85)] == \
        [0.01, 0.01, 0.001, 0.0001, 0.00001]
    pl = sched("plateau[base=0.01;factor=0.1;patience=2;maxDrops=1]")
    # No drop on the initial plateau (0.5, 0.5, 0.5), one after two tests without a new best,
    # then none (maxDrops=1).
    assert [pl.observe(e) for e in (0.5, 0.5, 0.5, 0.4, 0.41, 0.42, 0.30, 0.31, 0.32)] == \
        [False, False, False, False, False, True, False, False, False]
    assert math.isclose(pl.value(0, 0), 0.001)
    pl2 = Schedule("plateau", 0.01)
    pl2.load_state(pl.state())
    assert pl2.value(0, 0) == pl.value(0, 0)
    with pytest.raises(ConfigError, match="unknown schedule 'cosine'"):
        sched("cosine[base=0.1]")


def test_project_configs_build():
    cifar = Net(load_config(os.path.join(LAYERS, "cifar18.cfg")), image_shape=(3, 32, 32),
                batch_size=2)
    s = shapes(cifar)
    assert s["conv1"] == (32, 32, 32) and s["pool3"] == (64, 4, 4) and s["fc10"] == (10,)
    towers = Net(load_config(os.path.join(LAYERS, "tiny-towers.cfg")), image_shape=(3, 12, 12),
                 batch_size=2)
    assert towers.by_name["cat3"].out_shape == (18, 3, 3)
    assert towers.by_name["conv2a"].ws[0].shape == (4, 3, 3, 6)

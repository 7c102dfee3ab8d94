"""Export: numpy (re-imported into convnet: the same bits), PyTorch (the generated nn.Module
reproduces convnet's probabilities) and ONNX (onnxruntime), on a small trained net with every
exported layer type, round-up output sizes, groups and layers with two inputs."""
import importlib.util
import json
import os

import numpy as np
import pytest

from convnet.data import open_source
from convnet.export import export, main as export_main, read_numpy
from convnet.export.graph import inference_graph
from convnet.inference import Model
from small_runs import ROOT, train_small

NET = os.path.join(ROOT, "tests", "fixtures", "export-net.cfg")
DATA = "synthetic:size=13,train=64,test=16"
# float32 in both frameworks, summed in different orders: probabilities agree to this.
PROB_TOL = 1e-5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_small(tmp_path_factory.mktemp("export") / "run", NET, DATA, epochs=1)


@pytest.fixture(scope="module")
def reference(run_dir):
    """convnet's probabilities and raw crops (0..255, (N, 3, 13, 13)) of the validation set."""
    model = Model.load(run_dir)
    with open_source(DATA, workers=0) as ds:
        batch, _, _, _ = model.prepare_source(ds.source, 1, np.arange(16))
    probs, outs = model.probabilities(batch, layers=model.net.output_names())
    mean = model.info.mean[None].transpose(0, 3, 1, 2)          # 13x13 crop = the whole image
    raw = np.moveaxis(batch, -1, 0) + mean
    return model, probs.T, outs, raw.astype(np.float32)


def test_graph_pads_round_up_sizes(run_dir):
    model = Model.load(run_dir)
    nodes = {n["name"]: n for n in inference_graph(model.net, model.probs_layer)}
    # conv1: 13 + 2 - 4 = 11 over stride 2 rounds up to 7 outputs: 1 row of overhang.
    assert nodes["conv1"]["per_input"][0]["pads"] == (1, 1, 2, 2)
    assert nodes["pool1"]["pads"] == (0, 0, 2, 2)        # 7 -> 3 windows of 3 at 0, 3, 6
    assert nodes["pool2"]["pads"] == (0, 0, 2, 2)        # average: the last divides by 3
    band = nodes["rnorm1"]["band"]                       # size 4 = c-2..c+1, in 2 groups of 4
    assert band[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert band[5].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]     # 3..6, clipped to 4..7
    assert [len(n.get("per_input", [])) for n in (nodes["conv2b"], nodes["fc3"])] == [2, 2]


def test_numpy_export_reimports_bit_exact(run_dir, reference, tmp_path, capsys):
    model, probs, _, raw = reference
    out = str(tmp_path / "net.npz")
    assert export_main([run_dir, "--to", "numpy", out]) == 0
    assert out in capsys.readouterr().out
    doc, arrays = read_numpy(out)
    assert set(arrays) == {p.full_name for p in model.net.params} | {"inference.mean"}
    assert arrays["conv1.w"].shape == (3, 4, 4, 8) and arrays["fc3.w1"].shape == (72, 16)
    assert doc["output"] == "probs" and doc["inference"]["crop"] == 13
    assert "(C/groups, fs, fs, F)" in doc["arrays"]["conv1.w"]
    with np.load(out, allow_pickle=False) as z:     # plain arrays and a JSON string: no pickle
        json.loads(str(z["net.json"]))
    again = Model.load(out)
    with open_source(DATA, workers=0) as ds:
        batch, _, _, _ = again.prepare_source(ds.source, 1, np.arange(16))
    p2, _ = again.probabilities(batch)
    np.testing.assert_array_equal(p2.T, probs)


def _torch():
    return pytest.importorskip("torch", reason="PyTorch not installed (pip install "
                                               "torch==2.13.0)")


def test_torch_module_reproduces_probabilities(run_dir, reference, tmp_path):
    torch = _torch()
    model, probs, outs, raw = reference
    out = str(tmp_path / "torch")
    export(run_dir, "torch", out)
    spec = importlib.util.spec_from_file_location("exported_net", os.path.join(out, "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.Net()
    state = torch.load(os.path.join(out, "state_dict.pt"), weights_only=True)
    net.load_state_dict(state)           # strict: every key matches
    assert "conv2b.1.weight" in state and "conv2b.0.bias" in state and "mean" in state
    assert mod.CLASSES == model.info.class_names
    with torch.no_grad():
        acts = net.activations(torch.from_numpy(raw))
        got = net(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(got, probs, atol=PROB_TOL, rtol=0)
    # Every layer, not only the end: (N, C, H, W) against convnet's (C, H, W, N).
    for name, y in acts.items():
        ref = np.moveaxis(outs[name], -1, 0)
        np.testing.assert_allclose(y.numpy(), ref, atol=1e-4 * max(1, np.abs(ref).max()),
                                   rtol=1e-4, err_msg=name)


def test_onnx_model_reproduces_probabilities(run_dir, reference, tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install onnx)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    model, probs, _, raw = reference
    out = str(tmp_path / "net.onnx")
    assert export_main([run_dir, "--to", "onnx", out]) == 0
    onnx.checker.check_model(onnx.load(out))
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    got, = sess.run(["probs"], {"images": raw})
    np.testing.assert_allclose(got, probs, atol=PROB_TOL, rtol=0)
    one, = sess.run(["probs"], {"images": raw[:1]})          # the batch dimension is free
    np.testing.assert_allclose(one, probs[:1], atol=PROB_TOL, rtol=0)


def test_export_user_mistakes(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export_main([run_dir, "--to", "caffe", str(tmp_path / "x")])
    assert e.value.code == 2
    assert "--to" in capsys.readouterr().err
    assert export_main([str(tmp_path / "nothing"), "--to", "numpy", str(tmp_path / "x")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert export_main([run_dir, "--to", "numpy", str(tmp_path / "no" / "dir" / "x.npz")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_neuron_layers_apply_their_function_once(reference):
    """A type=neuron layer computes f(x), not f(f(x)) (its neuron= key once doubled as the
    neuron fused after a layer)."""
    _, _, outs, _ = reference
    x = outs["drop3"].astype(np.float64)
    np.testing.assert_allclose(outs["soft3"], np.log1p(np.exp(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs["abs3"], np.abs(x), rtol=0, atol=0)
    np.testing.assert_allclose(outs["square3"], np.abs(x) ** 2, rtol=1e-6, atol=1e-7)

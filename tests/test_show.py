"""The viewer: every figure rendered headless from a small trained run, each a valid PNG of the
expected size with non-trivial content; curves of several runs overlaid; the parts that need
the data source left out with a note when it cannot be opened."""
import os

import numpy as np
import pytest

from convnet.show import filter_grid, main as show_main, nearest, smooth
from small_runs import train_small

pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install matplotlib)")
from PIL import Image  # noqa: E402

SIZES = {"curves.png": (1200, 450), "filters.png": (800, 600),
         "predictions.png": (1600, 800), "neighbours.png": (1400, 1000)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("show")
    return [train_small(base / f"run{seed}", seed=seed) for seed in (1, 2)]


def check_png(path, size):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.load()                              # decodes completely: a valid file
        assert im.size == size
        px = np.asarray(im.convert("RGB"), np.float64)
    # Non-trivial: many colours, and not a blank page (a fifth of the pixels are not white).
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50
    assert (px.min(axis=2) < 250).mean() > 0.05 if "curves" not in path else \
        (px.min(axis=2) < 250).mean() > 0.01


def test_every_figure(runs, tmp_path, capsys, monkeypatch):
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):          # headless: PNG files only
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "figs"
    assert show_main([*runs, "--out", str(out), "--train-images", "40"]) == 0
    printed = capsys.readouterr().out
    for name, size in SIZES.items():
        assert str(out / name) in printed
        check_png(str(out / name), size)


def test_curves_overlay_runs_and_missing_data(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    assert show_main([runs[0], "--out", str(out), "--data", str(tmp_path / "none"),
                      "--no-window"]) == 0
    err = capsys.readouterr().err
    assert "cannot be opened" in err and "no predictions" in err
    assert sorted(os.listdir(out)) == ["curves.png", "filters.png"]


def test_show_user_mistakes(tmp_path, capsys):
    assert show_main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and err.count("\n") == 1


def test_filter_grid_normalises_each_filter():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 5, 5, 7)) * np.arange(1, 8)     # filters of very different scales
    g = filter_grid(w, cols=4, gap=1)
    assert g.shape == (2 * 6 + 1, 4 * 6 + 1, 3)
    for i in range(7):
        r, q = divmod(i, 4)
        tile = g[1 + r * 6:1 + r * 6 + 5, 1 + q * 6:1 + q * 6 + 5]
        assert tile.min() == 0.0 and tile.max() == 1.0
        np.testing.assert_allclose(tile, (w[..., i].transpose(1, 2, 0) - w[..., i].min())
                                   / np.ptp(w[..., i]))


def test_smooth_and_nearest():
    np.testing.assert_allclose(smooth([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    q = np.array([[0.0, 0.0], [10.0, 10.0]])
    pool = np.array([[9.0, 9.0], [1.0, 0.0], [0.0, 2.0], [10.0, 10.0]])
    assert nearest(q, pool, 2).tolist() == [[1, 2], [3, 0]]

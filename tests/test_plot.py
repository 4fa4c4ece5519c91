"""`mdsurrogate plot`: skeleton and training-curve figures are written as valid images with the expected panels
and lines (Agg canvas, no display), and bad input is one sentence with exit code 2."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from mdsurrogate.data.dataset import Dataset

from .conftest import invoke

mpl_image = pytest.importorskip("matplotlib.image")

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



def assert_png(path, min_side=200):
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpl_image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side and img.shape[2] in (3, 4)
    assert np.ptp(img[..., :3]) > 0.5  # not a blank canvas
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left behind


def train(recipe, data, out, *sets):
    res = invoke("train", recipe, "--data", data, "--out", out, "--quiet",
                 *[a for s in sets for a in ("--set", s)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def sticks(tmp_path_factory):
    """A tiny M-complex dataset (local edges = intra-complex sticks) and an EGNN trained on it for 2 epochs."""
    from mdsurrogate.data.ingest import ingest_mcomplex

    root = tmp_path_factory.mktemp("plot")
    ds = ingest_mcomplex(root / "mc", n_complexes=2, avg_size=3, n_train=10, n_val=4, n_test=6, horizon=1)
    run = train("recipes/mcomplex_egnn.toml", ds, root / "run", "train.epochs=2", "train.eval_every=1",
                "train.batch_size=5", "model.hidden=8", "model.layers=1")
    return ds, run


def test_skeleton_figure_panels_and_bones(sticks, tmp_path):
    from mdsurrogate.apps.plot import skeleton_figure, stick_polyline

    ds_path, run = sticks
    fig, info = skeleton_figure(run, dataset=ds_path, samples=3, device="cpu")
    ds = Dataset(ds_path)
    test_ids = ds.split_indices("test")
    assert info["samples"] == [int(test_ids[0]), int(test_ids[2]), int(test_ids[5])]  # spread over the split
    assert info["axes"] == len(fig.axes) == 9 and all(ax.name == "3d" for ax in fig.axes)
    for r, sid in enumerate(info["samples"]):
        traj, f0, f1 = ds.samples[sid]
        edges, _ = ds.edge_set("local", traj)
        n_bones = len(np.unique(np.sort(edges, axis=1), axis=0))
        row = fig.axes[3 * r : 3 * r + 3]
        assert [len(ax.lines) for ax in row] == [1, 1, 2]  # predicted panel: true (grey) behind the prediction
        x_in, x_true = ds.frame(traj, f0)[0], ds.frame(traj, f1)[0]
        for ax, x in ((row[0], x_in), (row[1], x_true)):
            xs, ys, zs = ax.lines[0].get_data_3d()
            assert np.isnan(xs).sum() == n_bones  # one NaN break per bone: every bone drawn once
            # mocap-style vertical axis handling: M-complex has none, so data z is drawn upwards unchanged
            ref = stick_polyline(x.astype(np.float64), np.unique(np.sort(edges, axis=1), axis=0))
            np.testing.assert_allclose(np.stack([xs, ys, zs], 1), ref, rtol=1e-6, equal_nan=True)
    assert all(np.isfinite(m) and m > 0 for m in info["mse"])


def test_plot_skeleton_cli_writes_png(sticks, tmp_path):
    ds_path, run = sticks
    out = tmp_path / "figs" / "skeleton.png"
    res = invoke("plot", "skeleton", run, "--data", ds_path, "--samples", 2, "--out", out, "--device", "cpu",
                 "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["axes"] == 6 and len(info["samples"]) == 2
    assert_png(out)


def test_vertical_axis_is_drawn_upwards_without_mirroring():
    from mdsurrogate.apps.plot import stick_polyline

    # the cyclic order used for up = y (mocap): (z, x, y); a permutation matrix with det +1 (no mirror image)
    up = 1
    order = [(up + 1) % 3, (up + 2) % 3, up]
    assert order == [2, 0, 1] and np.linalg.det(np.eye(3)[order]) == pytest.approx(1.0)
    seg = stick_polyline(np.arange(9.0).reshape(3, 3), np.array([[0, 1], [1, 2]]))
    assert seg.shape == (6, 3) and np.isnan(seg[2::3]).all()


def write_metrics(run, records):
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"epoch": 9, "trunc')


def test_curves_overlay_runs(sticks, tmp_path):
    from mdsurrogate.apps.plot import curves_figure

    _, run = sticks
    other = tmp_path / "other"
    write_metrics(other, [{"event": "epoch", "epoch": e, "train_loss": 1.0 / (e + 1),
                           **({"val_mse": 2.0 / (e + 1), "test_mse": 2.1 / (e + 1)} if e % 2 == 0 else {})}
                          for e in range(6)])
    fig, info = curves_figure([run, other])
    assert info["kind"] == "propagator" and info["lines"] == [2, 4]  # train per run | val + test per run
    left, right = fig.axes
    assert left.get_yscale() == right.get_yscale() == "log"
    np.testing.assert_array_equal(right.lines[2].get_xdata(), [0, 2, 4])  # evaluations only; truncated line skipped
    np.testing.assert_allclose(left.lines[1].get_ydata(), 1.0 / np.arange(1, 7))
    assert right.lines[3].get_linestyle() == "--" and right.lines[0].get_color() == left.lines[0].get_color()
    out = tmp_path / "curves.png"
    res = invoke("plot", "curves", run, other, "--out", out, "--label", "egnn", "--label", "fake")
    assert res.exit_code == 0, res.output
    assert_png(out)


def test_curves_of_potential_runs(tmp_path):
    from mdsurrogate.apps.plot import curves_figure

    pot = tmp_path / "pot"
    write_metrics(pot, [{"event": "epoch", "epoch": e, "train_loss": 0.5 / (e + 1), "val_loss": 0.4 / (e + 1),
                         "val_force_mae": 0.3 / (e + 1)} for e in range(4)])
    fig, info = curves_figure([pot])
    assert info == {"runs": [str(pot)], "kind": "potential", "lines": [1, 1]}
    assert "force MAE" in fig.axes[1].get_ylabel()
    prop = tmp_path / "prop"
    write_metrics(prop, [{"epoch": 0, "train_loss": 1.0, "val_mse": 1.0, "test_mse": 1.0}])
    res = invoke("plot", "curves", pot, prop, "--out", tmp_path / "mixed.png")
    assert res.exit_code == 2 and "cannot overlay" in res.output


@pytest.fixture(scope="module")
def nbody_run(tiny_nbody, tmp_path_factory):
    """A propagator whose dataset has no local edges."""
    return train("recipes/nbody_egnn.toml", tiny_nbody, tmp_path_factory.mktemp("plot_nbody") / "run",
                 "train.epochs=1", "model.hidden=8", "train.batch_size=20", "data.max_train_samples=20")


@pytest.mark.parametrize(
    "args, message",
    [
        (["plot", "curves", "{tmp}", "--out", "{tmp}/c.png"], "has no metrics.jsonl"),
        (["plot", "curves", "{tmp}/nowhere", "--out", "{tmp}/c.png"], "is not a run directory"),
        (["plot", "curves", "{run}", "--out", "{tmp}/c.mp4"], "the extension must be one of"),
        (["plot", "skeleton", "{nbody_run}", "--data", "{nbody}", "--out", "{tmp}/s.png"], "no local edges"),
        (["plot", "skeleton", "{run}", "--data", "{mc}", "--samples", "0", "--out", "{tmp}/s.png"], "--samples"),
        (["plot", "skeleton", "{run}", "--data", "{nbody}", "--out", "{tmp}/s.png"], "other features"),
    ],
)
def test_bad_input_is_one_sentence(args, message, sticks, tiny_nbody, nbody_run, tmp_path):
    mc, run = sticks
    fill = {"tmp": tmp_path, "run": run, "mc": mc, "nbody": tiny_nbody, "nbody_run": nbody_run}
    res = invoke(*[a.format(**{k: str(v) for k, v in fill.items()}) for a in args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 3  # one sentence (the console may wrap it)


def test_missing_matplotlib_names_the_extra(sticks, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backend_bases", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib…` now raises ImportError
    _, run = sticks
    res = invoke("plot", "curves", run, "--out", tmp_path / "c.png")
    assert res.exit_code == 2
    assert "pip install 'mdsurrogate[plot]'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "c.png").exists()

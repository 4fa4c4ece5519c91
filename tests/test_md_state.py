"""One definition of an MD state's velocity: ``frame_state`` (any frame of any Universe, e.g. where a rollout starts)
gives exactly what ingest stored for that frame; the ingest package's table and split codes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("MDAnalysisTests")
import MDAnalysis as mda  # noqa: E402
from MDAnalysisTests.datafiles import DCD, PSF  # noqa: E402

from mdsurrogate.data.dataset import SPLITS, Dataset  # noqa: E402
from mdsurrogate.data.ingest import INGESTERS, ingest_md  # noqa: E402
from mdsurrogate.data.sources.md import MDInputError, frame_state, velocity  # noqa: E402

from .mdfiles import smooth_trr  # noqa: E402


def _universe(*files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*map(str, files))


@pytest.fixture(scope="module")
def ca_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("state") / "ca"
    return Dataset(ingest_md(path, PSF, [DCD], select="name CA", delta=5, ratios=(0.6, 0.2, 0.2)))


def test_frame_state_is_what_ingest_stored(ca_dataset):
    u = _universe(PSF, DCD)
    ag = u.select_atoms("name CA")
    kind = ca_dataset.meta["md"]["velocities"]
    assert kind == "difference"
    for f in (1, 10, 97):
        st = frame_state(u, ag, f, velocities=kind, frame_dt=ca_dataset.frame_dt)
        x, v = ca_dataset.frame(0, f)
        np.testing.assert_array_equal(st.positions, x)
        np.testing.assert_array_equal(st.velocities, v)
        assert st.frame == f and st.time == pytest.approx(u.trajectory[f].time)
    last = frame_state(u, ag, -1, velocities=kind, frame_dt=ca_dataset.frame_dt)
    assert last.frame == len(u.trajectory) - 1 and u.trajectory.frame == last.frame  # left at that frame
    # a trajectory saved twice as often: the displacement over its spacing, rescaled to the dataset's
    half = frame_state(u, ag, 10, velocities=kind, frame_dt=2 * last.spacing)
    np.testing.assert_allclose(half.velocities, 2 * ca_dataset.frame(0, 10)[1], rtol=1e-6)


def test_frame_state_with_trajectory_velocities(tmp_path):
    gro, trr = smooth_trr(tmp_path)  # velocities that describe the motion over a frame (AdK's TRR's do not)
    ds = Dataset(ingest_md(tmp_path / "trr", gro, [trr], select="name CA", delta=1, ratios=(0.4, 0.3, 0.3)))
    assert ds.meta["md"]["velocities"] == "trajectory"
    u = _universe(gro, trr)
    st = frame_state(u, u.select_atoms("name CA"), 3, velocities="trajectory", frame_dt=ds.frame_dt)
    x, v = ds.frame(0, 3)
    np.testing.assert_array_equal(st.positions, x)
    np.testing.assert_array_equal(st.velocities, v)
    assert st.frame == 3 and st.time == pytest.approx(u.trajectory[3].time)


def test_frame_state_bad_input_speaks_in_parameters():
    u = _universe(PSF, DCD)
    ag = u.select_atoms("name CA")
    with pytest.raises(MDInputError, match="frame 500 is out of range: the trajectory has 98 frames"):
        frame_state(u, ag, 500, velocities="difference", frame_dt=1.0)
    with pytest.raises(MDInputError, match="cannot start at frame 0"):
        frame_state(u, ag, 0, velocities="difference", frame_dt=1.0)
    with pytest.raises(MDInputError, match="has none"):
        frame_state(u, ag, 3, velocities="trajectory", frame_dt=1.0)
    with pytest.raises(MDInputError, match="velocities must be"):
        frame_state(u, ag, 3, velocities="forward", frame_dt=1.0)
    with pytest.raises(MDInputError, match="frame_dt"):
        frame_state(u, ag, 3, velocities="difference", frame_dt=0.0)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(velocity("difference", 3 * x, x, None, frame_dt=2.0, spacing=4.0), x)


def test_ingest_errors_name_parameters_not_flags(tmp_path):
    for kwargs, phrase in (({"delta": 0}, "delta must be"), ({"cutoff": -1.0}, "cutoff must be a positive"),
                           ({"velocities": "trajectory"}, "velocities='difference'"),
                           ({"delta": 40, "ratios": (0.6, 0.2, 0.2)}, "smaller delta")):
        with pytest.raises(MDInputError, match=phrase) as info:
            ingest_md(tmp_path / "x", PSF, [DCD], select="name CA", **kwargs)
        assert "--" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_ingest_table_and_split_codes(ca_dataset):
    assert set(INGESTERS) == {"nbody", "mcomplex", "mocap_amc", "mocap_positions", "md", "adk", "ase", "emt"}
    assert INGESTERS["md"] is ingest_md
    codes = ca_dataset.split_codes
    assert set(np.unique(codes)) == set(SPLITS.values())
    # chronological: every train sample before every val sample before every test sample
    starts = ca_dataset.samples[:, 1]
    assert starts[codes == SPLITS["train"]].max() < starts[codes == SPLITS["val"]].min()
    assert starts[codes == SPLITS["val"]].max() < starts[codes == SPLITS["test"]].min()

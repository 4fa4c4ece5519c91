"""Periodic boxes (data/periodic.py): box vectors, nearest images in skewed boxes, molecules made whole along bonds,
frames unwrapped in time, and agreement with MDAnalysis' own transformations on the GROMACS AdK trajectory."""

from __future__ import annotations

import numpy as np
import pytest

from mdsurrogate.data.periodic import Unwrapper, box_matrix, fragments, make_whole, minimum_image, wrap

DODECAHEDRON = [80.0, 80.0, 80.0, 60.0, 60.0, 90.0]  # GROMACS' rhombic dodecahedron (adk_oplsaa)
TRICLINIC = [35.4, 35.1, 34.2, 91.3, 61.7, 44.4]  # CHARMM tip125_tric


def _chain(n: int, seed: int, bond: float = 1.5) -> np.ndarray:
    steps = np.random.default_rng(seed).normal(size=(n, 3))
    return np.cumsum(steps * bond / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)


@pytest.mark.parametrize("dims", [DODECAHEDRON, TRICLINIC, [30.0, 40.0, 50.0, 90.0, 90.0, 90.0]])
def test_box_matrix_is_mdanalysis_triclinic_vectors(dims):
    mdamath = pytest.importorskip("MDAnalysis.lib.mdamath")
    np.testing.assert_allclose(box_matrix(dims), mdamath.triclinic_vectors(np.array(dims, np.float64)), atol=1e-4)


@pytest.mark.parametrize("dims", [None, [0, 0, 0, 90, 90, 90], [10, 10, np.nan, 90, 90, 90], [1, 1, 1, 0, 90, 90]])
def test_no_usable_box_is_none(dims):
    assert box_matrix(dims) is None


@pytest.mark.parametrize("dims", [DODECAHEDRON, TRICLINIC])
def test_minimum_image_is_the_nearest_image(dims):
    box = box_matrix(dims)
    d = np.random.default_rng(0).uniform(-60, 60, size=(500, 3))
    mi = minimum_image(d, box)
    # brute force over 7³ images around the image that rounding in reduced coordinates gives
    f = d @ np.linalg.inv(box)
    start = (f - np.round(f)) @ box
    n = np.arange(-3, 4)
    shifts = np.stack(np.meshgrid(n, n, n, indexing="ij"), -1).reshape(-1, 3) @ box
    best = np.linalg.norm(start[:, None, :] + shifts[None], axis=-1).min(1)
    np.testing.assert_allclose(np.linalg.norm(mi, axis=1), best, atol=1e-9)
    lattice = (mi - d) @ np.linalg.inv(box)  # mi differs from d by whole box vectors
    np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-9)


def test_make_whole_undoes_wrapping_along_the_bonds():
    box = box_matrix(TRICLINIC)
    x = _chain(400, seed=1) + 5.0  # a 400-atom chain spans several boxes
    bonds = np.stack([np.arange(399), np.arange(1, 400)], 1)
    labels, parent = fragments(400, bonds)
    assert labels.max() == 0 and parent[0] == 0 and (parent[1:] == np.arange(399)).all()
    whole = make_whole(wrap(x, box), parent, box)
    shift = whole - x  # one whole-box translation for the whole chain
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-9)
    np.testing.assert_allclose(shift[0] @ np.linalg.inv(box), np.round(shift[0] @ np.linalg.inv(box)), atol=1e-9)


def test_fragments_and_unbonded_atoms():
    bonds = np.array([[0, 1], [1, 2], [4, 3], [6, 5]])  # atom 7 has no bond
    labels, parent = fragments(8, bonds)
    assert len(set(labels[[0, 1, 2]])) == 1 and len(set(labels)) == 4
    assert parent[7] == 7 and parent[3] == 3 and parent[4] == 3  # roots are the lowest-indexed atoms


def test_wrapped_and_unwrapped_frames_give_the_same_positions():
    """Any images of a continuous trajectory (wrapped per atom, or each molecule shifted by whole boxes) give the
    same unwrapped positions: whole molecules, centres in the box at the first frame, no jumps after."""
    rng = np.random.default_rng(3)
    box = box_matrix(DODECAHEDRON)
    # 30 three-atom molecules diffusing 3 Å per frame for 20 frames, unwrapped
    mol = np.repeat(np.arange(30), 3)
    bonds = np.array([[3 * m, 3 * m + 1] for m in range(30)] + [[3 * m, 3 * m + 2] for m in range(30)])
    x0 = rng.uniform(0, 80, size=(30, 3))[mol] + rng.normal(size=(90, 3))
    frames = x0 + np.cumsum(rng.normal(scale=3.0, size=(20, 30, 3)), axis=0)[:, mol]
    wrapped = np.array([wrap(f, box) for f in frames])
    shifted = frames + (rng.integers(-2, 3, size=(30, 3)) @ box)[mol]
    outs = []
    for source in (frames, wrapped, shifted):
        un = Unwrapper(90, bonds)
        outs.append(np.array([un(f, box) for f in source]))
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-9)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-9)
    # the motion is the original one (up to one whole-box shift per molecule, fixed at the first frame)
    np.testing.assert_allclose(np.diff(outs[0], axis=0), np.diff(frames, axis=0), atol=1e-9)
    centres = np.stack([outs[0][0][mol == m].mean(0) for m in range(30)]) @ np.linalg.inv(box)
    assert ((centres >= 0) & (centres < 1)).all()


def test_frames_without_a_box_pass_unchanged():
    un = Unwrapper(3, np.array([[0, 1]]))
    x = np.arange(9.0).reshape(3, 3) * 100
    np.testing.assert_array_equal(un(x, None), x)


def test_agrees_with_mdanalysis_nojump_on_adk():
    """On the GROMACS AdK trajectory (wrapped, rhombic dodecahedron) the backbone positions equal those of
    MDAnalysis' NoJump transformation up to whole-box shifts per atom (ours also makes the protein whole), the same
    in every frame: the same unwrapping in time."""
    pytest.importorskip("MDAnalysisTests")
    from MDAnalysis import transformations
    from MDAnalysisTests.datafiles import TPR, XTC

    from mdsurrogate.data.sources.md import MDSystem
    from tests.mdfiles import universe

    u = universe(TPR, XTC)
    bb = u.select_atoms("backbone")
    system = MDSystem.from_atomgroup(bb, "backbone")
    un = Unwrapper(len(bb), system.bonds)
    ours = np.array([un(bb.positions, box_matrix(ts.dimensions)) for ts in u.trajectory])
    ref_u = universe(TPR, XTC)
    ref_u.trajectory.add_transformations(transformations.NoJump())
    ref_bb = ref_u.select_atoms("backbone")
    ref = np.array([ref_bb.positions.astype(np.float64) for _ in ref_u.trajectory])
    box = box_matrix(u.trajectory[0].dimensions)
    lattice = (ours - ref) @ np.linalg.inv(box)
    np.testing.assert_allclose(lattice, np.round(lattice), atol=2e-3)  # whole boxes (float32 coordinates)
    assert (np.round(lattice) == np.round(lattice[0])).all()  # each atom's shift is the same in every frame
    steps = np.linalg.norm(np.diff(ours, axis=0), axis=-1)
    raw = np.linalg.norm(np.diff(np.array([bb.positions for _ in u.trajectory]), axis=0), axis=-1)
    assert raw.max() > 40 and steps.max() < 12  # the file's jumps of a box length are gone

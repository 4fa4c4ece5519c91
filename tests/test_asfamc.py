"""ASF/AMC reader and forward kinematics: synthetic files with hand-computed poses, and the real CMU files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mdsurrogate.data.sources.asfamc import (
    MocapFormatError,
    Skeleton,
    forward_kinematics,
    load_trial,
    read_amc,
    read_asf,
    tree_distance_edges,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MOCAP = SHARED / "data" / "mocap"
ASF35 = MOCAP / "raw" / "35.asf"
AMC35_120 = MOCAP / "raw" / "35_01.amc"
DIR35_30 = MOCAP / "subject35_30hz"
RUN_NPZ = MOCAP / "cmu_subject09_run.npz"

needs_mocap = pytest.mark.skipif(
    not (ASF35.exists() and AMC35_120.exists() and DIR35_30.is_dir() and RUN_NPZ.exists()),
    reason="shared CMU mocap files not available",
)

# ------------------------------------------------------------------------------------------- synthetic files
TINY_ASF = """# a two-bone test skeleton
:version 1.10
:name tiny
:units
  mass 1.0
  length 1.0
  angle deg
  frobnicate 7
:documentation
  free text: (anything) 1 2 3 , here
:root
  order TX TY TZ RX RY RZ
  axis XYZ
  position 0 0 0
  orientation 0 0 0
:bonedata
  begin
    id 1
    name a
    direction 1 0 0
    length 2
    axis 0 0 90 XYZ
    dof rz rx
    limits (-180.0 180.0)
           (-inf inf)
    bodymass 3.0
  end
  begin
    id 2
    name b
    direction 0 1 0
    length 1
    axis 0 0 0 XYZ
    dof ry
  end
:skin whatever.obj
:hierarchy
  begin
    root a
    a b
  end
"""

# Frame 1: rest pose shifted to (1, 2, 3). Frame 2: root RY 90, bone a rz 90 (C = Rz90 commutes).
# Frame 3: bone a rx 90 about its local x (= global y through C = Rz90). Frame 4: a rz 90 then rx 90.
TINY_AMC = """#!comment
:FULLY-SPECIFIED
:DEGREES
1
b 0
root 1 2 3 0 0 0
a 0 0
2
a 90 0
root 0 0 0 0 90 0
b 0
3
root 0 0 0 0 0 0
a 0 90
b 0
4
root 0 0 0 0 0 0
a 90 90
b 0
"""
TINY_EXPECTED = np.array(
    [
        [[1, 2, 3], [3, 2, 3], [3, 3, 3]],
        [[0, 0, 0], [0, 2, 0], [0, 2, 1]],
        [[0, 0, 0], [0, 0, -2], [0, 1, -2]],
        [[0, 0, 0], [0, 2, 0], [0, 2, 1]],
    ],
    dtype=float,
)


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


@pytest.fixture
def tiny(tmp_path):
    return _write(tmp_path / "tiny.asf", TINY_ASF), _write(tmp_path / "tiny.amc", TINY_AMC)


def test_tiny_skeleton_parsed(tiny):
    sk = read_asf(tiny[0])
    assert sk.names == ["root", "a", "b"]
    assert sk.parents.tolist() == [-1, 0, 1]
    assert sk.edges.tolist() == [[1, 0], [2, 1]]
    assert sk.dofs == [("tx", "ty", "tz", "rx", "ry", "rz"), ("rz", "rx"), ("ry",)]
    assert sk.limits[1] == [(-180.0, 180.0), (-math.inf, math.inf)]
    assert sk.name == "tiny" and sk.angle_unit == "deg" and sk.ids == [None, 1, 2]
    np.testing.assert_allclose(sk.axis_angles[1], [0, 0, math.pi / 2])


def test_tiny_forward_kinematics_conventions(tiny):
    x, _ = load_trial(*tiny)
    assert x.dtype == np.float64 and x.shape == (4, 3, 3)
    np.testing.assert_allclose(x, TINY_EXPECTED, atol=1e-12)


def test_radians_and_missing_bone_and_interleaved_root_order(tmp_path):
    asf = _write(tmp_path / "t.asf", TINY_ASF.replace("order TX TY TZ RX RY RZ", "order RX RY RZ TX TY TZ"))
    h = math.pi / 2
    amc = _write(tmp_path / "t.amc", f":FULLY-SPECIFIED\n:RADIANS\n1\nroot 0 {h} 0 1 2 3\na {h} {h}\n")
    sk = read_asf(asf)
    motion = read_amc(amc, sk)
    assert motion.angle_unit == "rad" and "b" not in motion.channels  # b never given: its dof is 0
    x = forward_kinematics(sk, motion)
    # root at (1,2,3) turned by RY 90; bone a as in frame 4 of TINY_AMC, then turned by the root.
    ry = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=float)
    expected = np.array([1, 2, 3]) + TINY_EXPECTED[3] @ ry.T
    np.testing.assert_allclose(x[0], expected, atol=1e-12)


def test_skeleton_dataclass_minimal():
    sk = Skeleton(names=["root", "a", "b", "c"], parents=np.array([-1, 0, 1, 0]))
    assert sk.edges.tolist() == [[1, 0], [2, 1], [3, 0]]
    with pytest.raises(ValueError):
        Skeleton(names=["root", "a"], parents=np.array([-1, 1]))


def test_tree_distance_edges_small():
    edges = np.array([[1, 0], [2, 1], [3, 2]])  # a path 0-1-2-3
    index, hops = tree_distance_edges(edges, 4, max_hops=2)
    pairs = {(i, j): h for i, j, h in zip(index[0].tolist(), index[1].tolist(), hops.tolist(), strict=True)}
    assert pairs == {
        (0, 1): 1,
        (1, 0): 1,
        (1, 2): 1,
        (2, 1): 1,
        (2, 3): 1,
        (3, 2): 1,
        (0, 2): 2,
        (2, 0): 2,
        (1, 3): 2,
        (3, 1): 2,
    }
    index, hops = tree_distance_edges(edges, 4, max_hops=3)
    assert index.shape == (2, 12) and hops.max() == 3
    with pytest.raises(ValueError):
        tree_distance_edges(edges, 3)


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("direction 1 0 0", "direction 1 0", "direction needs 3 numbers"),
        ("length 2", "length two", "non-numeric"),
        ("dof rz rx", "dof rz rq", "dof"),
        ("    a b\n", "    a b\n    b ghost\n", "'ghost'"),
        ("    a b\n", "", "'b' does not appear in the :hierarchy"),
        ("  end\n  begin\n    id 2", "  begin\n    id 2", "'begin' inside"),
        ("           (-inf inf)\n", "", "1 limits for 2 dofs"),
    ],
)
def test_malformed_asf_rejected(tmp_path, old, new, needle):
    assert old in TINY_ASF
    path = _write(tmp_path / "bad.asf", TINY_ASF.replace(old, new, 1))
    with pytest.raises(MocapFormatError, match="bad.asf, line") as info:
        read_asf(path)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("a 0 90\n", "a 0\n", "frame 3, bone 'a': expected 2 values"),
        ("a 0 90\n", "a 0 ninety\n", "frame 3, bone 'a': non-numeric"),
        ("a 0 90\n", "", "frame 3 lacks bone(s) 'a'"),
        ("a 0 90\n", "a 0 90\nzz 1\n", "frame 3 names bone 'zz'"),
        ("a 0 90\n", "a 0 90\na 0 90\n", "gives bone 'a' twice"),
        ("3\n", "1\n", "does not increase"),
        ("a 0 90\n", "a 0 nan\n", "non-finite"),
    ],
)
def test_malformed_amc_rejected(tiny, tmp_path, old, new, needle):
    sk = read_asf(tiny[0])
    path = _write(tmp_path / "bad.amc", TINY_AMC.replace(old, new, 1))
    with pytest.raises(MocapFormatError, match="bad.amc, line") as info:
        read_amc(path, sk)
    assert needle in str(info.value)


# ---------------------------------------------------------------------------------------------- real CMU data
@pytest.fixture(scope="module")
def skel35():
    return read_asf(ASF35)


@pytest.fixture(scope="module")
def walk120(skel35):
    return forward_kinematics(skel35, read_amc(AMC35_120, skel35))


def _bone_lengths(x: np.ndarray, sk: Skeleton) -> np.ndarray:
    return np.linalg.norm(x[:, 1:] - x[:, sk.parents[1:]], axis=-1)


@needs_mocap
def test_cmu_skeleton_topology_matches_run_file(skel35):
    run_edges = np.load(RUN_NPZ)["edges"]
    assert skel35.n_joints == 31 and skel35.names[0] == "root"
    assert skel35.edges.shape == (30, 2)
    np.testing.assert_array_equal(skel35.edges, run_edges)
    assert skel35.length_unit == pytest.approx(0.45) and skel35.angle_unit == "deg"
    index, hops = tree_distance_edges(skel35.edges, skel35.n_joints)
    assert index.shape == (2, 130)
    assert np.bincount(hops).tolist() == [0, 60, 70]
    assert not np.any(index[0] == index[1])
    pairs = set(zip(index[0].tolist(), index[1].tolist(), strict=True))
    assert pairs == {(j, i) for i, j in pairs}


@needs_mocap
def test_cmu_bone_lengths_constant_120hz(skel35, walk120):
    assert walk120.shape == (358, 31, 3) and walk120.dtype == np.float64
    lengths = _bone_lengths(walk120, skel35)
    assert (np.ptp(lengths, axis=0) / lengths.mean(axis=0)).max() < 1e-6
    np.testing.assert_allclose(lengths.mean(axis=0), skel35.lengths[1:], rtol=1e-9)


@needs_mocap
def test_cmu_all_30hz_trials(skel35):
    files = sorted(DIR35_30.glob("35_*.amc"))
    assert len(files) == 33
    for path in files:
        x = forward_kinematics(skel35, read_amc(path, skel35))
        assert x.shape[1:] == (31, 3) and x.shape[0] >= 30, path.name
        lengths = _bone_lengths(x, skel35)
        assert (np.ptp(lengths, axis=0) / lengths.mean(axis=0)).max() < 1e-6, path.name


@needs_mocap
def test_cmu_30hz_is_every_4th_frame_of_120hz(skel35, walk120):
    m30 = read_amc(DIR35_30 / "35_01.amc", skel35)
    m120 = read_amc(AMC35_120, skel35)
    np.testing.assert_array_equal(m120.frame_numbers[::4], np.arange(1, 359, 4))
    for bone, values in m30.channels.items():
        np.testing.assert_array_equal(values, m120.channels[bone][::4])
    x30 = forward_kinematics(skel35, m30)
    np.testing.assert_allclose(x30, walk120[::4], rtol=0, atol=1e-10)


@needs_mocap
def test_cmu_crlf_and_lf_identical(skel35, walk120, tmp_path):
    raw_amc, raw_asf = AMC35_120.read_bytes(), ASF35.read_bytes()
    assert b"\r\n" in raw_amc and b"\r\n" in raw_asf
    lf_asf = tmp_path / "35.asf"
    lf_amc = tmp_path / "35_01.amc"
    lf_asf.write_bytes(raw_asf.replace(b"\r\n", b"\n"))
    lf_amc.write_bytes(raw_amc.replace(b"\r\n", b"\n"))
    x_lf, sk_lf = load_trial(lf_asf, lf_amc)
    assert sk_lf.names == skel35.names
    np.testing.assert_array_equal(x_lf, walk120)


@needs_mocap
def test_cmu_truncated_amc_rejected(skel35, tmp_path):
    lines = AMC35_120.read_bytes().split(b"\r\n")
    start = lines.index(b"100")
    # cut at a line boundary in the middle of frame 100: the frame lacks the bones that follow
    cut = tmp_path / "cut_lines.amc"
    cut.write_bytes(b"\r\n".join(lines[: start + 12]) + b"\r\n")
    with pytest.raises(MocapFormatError, match=r"cut_lines\.amc, line .*frame 100 lacks bone") as info:
        read_amc(cut, skel35)
    assert "truncated" in str(info.value)
    # cut in the middle of a bone line: too few values for that bone's dofs
    partial = lines[start + 9].split(b" ")[:2]
    cut2 = tmp_path / "cut_midline.amc"
    cut2.write_bytes(b"\r\n".join(lines[: start + 9] + [b" ".join(partial)]))
    bone = partial[0].decode()
    n_dofs = len(skel35.dofs[skel35.index(bone)])
    assert n_dofs > 1
    with pytest.raises(MocapFormatError, match=rf"frame 100, bone '{bone}': expected {n_dofs} values"):
        read_amc(cut2, skel35)


@needs_mocap
def test_cmu_unknown_bone_in_hierarchy_or_amc_rejected(skel35, tmp_path):
    asf = ASF35.read_bytes()
    assert b"    lfoot ltoes\r\n" in asf
    bad_asf = tmp_path / "bad.asf"
    bad_asf.write_bytes(asf.replace(b"    lfoot ltoes\r\n", b"    lfoot ltoes lheel\r\n"))
    with pytest.raises(MocapFormatError, match=r"bad\.asf, line \d+: .*'lheel'.*does not define"):
        read_asf(bad_asf)
    bad_amc = tmp_path / "bad.amc"
    bad_amc.write_bytes(AMC35_120.read_bytes().replace(b"\r\nrtoes 5.06152\r\n", b"\r\nrtoez 5.06152\r\n", 1))
    with pytest.raises(MocapFormatError, match=r"bad\.amc, line 29: frame 1 names bone 'rtoez'"):
        read_amc(bad_amc, skel35)


@needs_mocap
def test_cmu_walking_pose_is_plausible(skel35, walk120):
    """y is vertical, feet on the ground, stance foot still, toes along the walking direction, arms down.

    These checks separate the convention used (R = R_parent·C·E·Cᵀ with E composed about fixed axes in the dof
    order, direction in the global rest frame, joint = parent + length·R_joint·direction) from the
    plausible-looking alternatives (reversed Euler order, inverse rotations, Cᵀ·E·C, the parent's rotation for
    the bone vector, direction read in the local axis frame): each of those fails at least one of them.
    """
    x, sk = walk120, skel35
    idx = {n: sk.index(n) for n in sk.names}
    mean_y = x[..., 1].mean(axis=0)
    root_y = x[:, 0, 1]
    assert 15 < root_y.mean() < 20  # ≈ 1 m at 0.45 in… units: 17.8 / 0.45 · 2.54 cm
    assert np.argmax(mean_y) == idx["head"]
    feet = {idx[n] for n in ("lfoot", "rfoot", "ltoes", "rtoes")}
    assert set(np.argsort(mean_y)[:4].tolist()) == feet
    assert abs(x[..., 1].min()) < 0.5  # the ground is at y ≈ 0
    # the lower foot (contact) hardly slides while the body moves on
    balls = x[:, [idx["lfoot"], idx["rfoot"]]]
    contact = balls[..., 1].argmin(axis=1)[:-1]
    speed = np.linalg.norm(np.diff(balls[..., [0, 2]], axis=0), axis=-1)
    root_speed = np.linalg.norm(np.diff(x[:, 0, [0, 2]], axis=0), axis=-1).mean()
    assert np.median(speed[np.arange(len(contact)), contact]) < 0.15 * root_speed
    # toes point where the body goes
    walk = x[-1, 0, [0, 2]] - x[0, 0, [0, 2]]
    fwd = (x[:, [idx["ltoes"], idx["rtoes"]]] - x[:, [idx["lfoot"], idx["rfoot"]]]).mean(axis=1)[:, [0, 2]]
    cos = fwd @ walk / (np.linalg.norm(fwd, axis=1) * np.linalg.norm(walk))
    assert cos.mean() > 0.9
    # arms hang by the body: wrists below the hips' root height, not spread far outside the hips
    lw, rw = x[:, idx["lwrist"]], x[:, idx["rwrist"]]
    lh, rh = x[:, idx["lhipjoint"]], x[:, idx["rhipjoint"]]
    assert lw[:, 1].mean() < root_y.mean() and rw[:, 1].mean() < root_y.mean()
    spread = ((lw - rw) * (lh - rh)).sum(-1).mean() / ((lh - rh) ** 2).sum(-1).mean()
    assert 1.0 < spread < 3.5

"""Acclaim ASF/AMC motion capture (CMU database format): skeleton + motion reader and forward kinematics.

The ASF file describes the skeleton in its rest pose: for every bone a unit ``direction`` (in the global
frame of the rest pose), a ``length``, a local frame given by ``axis`` angles (and their rotation order),
and the rotational degrees of freedom (``dof``) that the AMC file animates. The AMC file lists, frame by
frame, the channel values of every animated bone (the root: translation and rotation in the order of its
``order`` line).

Forward kinematics (docs/protocols.md §3.1), vectorised over frames:

* ``Rot(a, α)`` is the right-handed (active) rotation by α about axis a; an ordered list of rotations
  ``(a1, α1), (a2, α2), …`` about *fixed* axes composes to ``… · Rot(a2, α2) · Rot(a1, α1)`` (the first one
  listed is applied first). This is used for the bone channels (in the order of the bone's ``dof`` line), the
  root rotation channels (in the order of the root's ``order`` line) and the ``axis`` angles (in the order of
  the axis-order token, ``XYZ`` by default; the three numbers are the angles about x, y and z).
* ``C_j`` = axis matrix of bone j, ``E_j`` = its channel rotation (identity for bones without rotational dofs
  and for dofs that the AMC file does not give). Global rotation ``R_j = R_parent · C_j · E_j · C_jᵀ``.
* The root joint sits at ``position + (TX, TY, TZ)``; its rotation uses the root ``orientation`` angles as C.
  Every other joint j (the *end* of bone j) sits at ``p_parent + length_j · R_j · direction_j``.

With all channels at zero every R is the identity and the skeleton is in the ASF rest pose, which is why the
directions are read as global-frame vectors. Angles are degrees unless ``:units angle rad`` (ASF) or
``:RADIANS`` (AMC) say otherwise; lengths stay in ASF units (CMU: y is vertical). Translation / length dofs of
non-root bones (``tx ty tz l``; not used by CMU) are parsed and kept in :class:`Motion` but not applied.

Joints are numbered in depth-first order of the ``:hierarchy`` (children in the order listed), root = 0, so a
joint's parent always precedes it. For the CMU skeletons this gives 31 joints and the 30 (child, parent) edges
of the EGHN Walk/Run benchmarks.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "MocapFormatError",
    "Skeleton",
    "Motion",
    "read_asf",
    "read_amc",
    "forward_kinematics",
    "load_trial",
    "tree_distance_edges",
]

_AXIS_INDEX = {"x": 0, "y": 1, "z": 2}
_ROOT_CHANNELS = ("tx", "ty", "tz", "rx", "ry", "rz")
_BONE_DOFS = ("rx", "ry", "rz", "tx", "ty", "tz", "l")
_DEFAULT_ROOT_ORDER = ("tx", "ty", "tz", "rx", "ry", "rz")
_ANGLE_UNITS = {
    "deg": "deg",
    "degree": "deg",
    "degrees": "deg",
    "rad": "rad",
    "radian": "rad",
    "radians": "rad",
}


class MocapFormatError(ValueError):
    """An ASF or AMC file is malformed; the message names the file and the line (and frame / bone)."""


def _error(src: str, lineno: int | None, message: str) -> MocapFormatError:
    where = f"{src}, line {lineno}" if lineno is not None else src
    return MocapFormatError(f"{where}: {message}")


def _read_lines(path: str | os.PathLike) -> list[str]:
    # splitlines handles LF, CRLF and CR alike; undecodable bytes can only sit in comments/documentation.
    return Path(path).read_bytes().decode("utf-8", errors="replace").splitlines()


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------------- rotations
def _axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """Right-handed rotation by ``angle`` [...] (radians) about coordinate axis 0/1/2 → [..., 3, 3]."""
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros(angle.shape + (3, 3))
    i, j = (axis + 1) % 3, (axis + 2) % 3
    out[..., axis, axis] = 1.0
    out[..., i, i] = c
    out[..., j, j] = c
    out[..., i, j] = -s
    out[..., j, i] = s
    return out


def _fixed_axis_euler(axes: list[int], angles: np.ndarray) -> np.ndarray:
    """Compose rotations about fixed axes applied in the listed order: ``angles`` [..., k] → [..., 3, 3]."""
    angles = np.asarray(angles, dtype=np.float64)
    out = np.broadcast_to(np.eye(3), angles.shape[:-1] + (3, 3)).copy()
    for k, axis in enumerate(axes):
        out = _axis_rotation(axis, angles[..., k]) @ out
    return out


def _axis_matrix(angles_xyz: np.ndarray, order: str) -> np.ndarray:
    """ASF ``axis`` line: angles about x, y, z (radians), applied in the order of the letters of ``order``."""
    axes = [_AXIS_INDEX[c] for c in order.lower()]
    return _fixed_axis_euler(axes, np.asarray(angles_xyz, dtype=np.float64)[axes])


# ------------------------------------------------------------------------------------------------ data types
@dataclass
class Skeleton:
    """A skeleton in joint order (depth-first from the root, root = 0).

    Attributes:
        names: joint names; ``names[0]`` is ``"root"``, joint j > 0 is the end point of ASF bone ``names[j]``.
        parents: [J] int64 parent index, -1 for the root; ``parents[j] < j``.
        directions: [J, 3] unit bone directions in the global rest-pose frame (root row 0).
        lengths: [J] bone lengths in ASF length units (root 0).
        axis_angles: [J, 3] ``axis`` angles about x, y, z in radians (root: its ``orientation``).
        axis_orders: [J] rotation order of the axis angles, e.g. ``"XYZ"`` (root: its ``axis`` line).
        dofs: [J] channel names in AMC order, lower case (root: its ``order`` line, e.g. tx ty tz rx ry rz).
        limits: [J] list of (low, high) per dof as given (parsed, not enforced; angles in the ASF unit).
        root_position: [3] the root's pre-set position, added to its translation channels.
        ids: [J] the ASF ``id`` of each bone (None for the root or when absent).
        length_unit, mass_unit, angle_unit: the ASF ``:units`` (``angle_unit`` is "deg" or "rad").
        name: the ASF ``:name``; source: the file it was read from (for messages).
    """

    names: list[str]
    parents: np.ndarray
    directions: np.ndarray | None = None
    lengths: np.ndarray | None = None
    axis_angles: np.ndarray | None = None
    axis_orders: list[str] | None = None
    dofs: list[tuple[str, ...]] | None = None
    limits: list[list[tuple[float, float]]] | None = None
    root_position: np.ndarray | None = None
    ids: list[int | None] | None = None
    length_unit: float = 1.0
    mass_unit: float = 1.0
    angle_unit: str = "deg"
    name: str = ""
    source: str = "<skeleton>"

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        n = len(self.names)
        self.parents = np.asarray(self.parents, dtype=np.int64).reshape(-1)
        if self.parents.shape != (n,):
            raise ValueError(f"Skeleton: parents has {self.parents.shape[0]} entries for {n} joint names.")
        if n == 0 or self.parents[0] != -1:
            raise ValueError("Skeleton: joint 0 must be the root (parent -1).")
        if n > 1 and not np.all((self.parents[1:] >= 0) & (self.parents[1:] < np.arange(1, n))):
            raise ValueError("Skeleton: every non-root joint needs a parent with a smaller index.")
        if len(set(self.names)) != n:
            raise ValueError("Skeleton: joint names must be unique.")
        self.directions = (
            np.zeros((n, 3)) if self.directions is None else np.asarray(self.directions, dtype=np.float64)
        )
        self.lengths = np.zeros(n) if self.lengths is None else np.asarray(self.lengths, dtype=np.float64)
        self.axis_angles = (
            np.zeros((n, 3)) if self.axis_angles is None else np.asarray(self.axis_angles, dtype=np.float64)
        )
        if self.axis_orders is None:
            self.axis_orders = ["XYZ"] * n
        if self.dofs is None:
            self.dofs = [_DEFAULT_ROOT_ORDER] + [()] * (n - 1)
        self.dofs = [tuple(d) for d in self.dofs]
        if self.limits is None:
            self.limits = [[] for _ in range(n)]
        if self.ids is None:
            self.ids = [None] * n
        self.root_position = (
            np.zeros(3) if self.root_position is None else np.asarray(self.root_position, dtype=np.float64)
        )
        for arr, shape, label in (
            (self.directions, (n, 3), "directions"),
            (self.lengths, (n,), "lengths"),
            (self.axis_angles, (n, 3), "axis_angles"),
            (self.root_position, (3,), "root_position"),
        ):
            if arr.shape != shape:
                raise ValueError(f"Skeleton: {label} has shape {arr.shape}, expected {shape}.")
        for label, seq in (("axis_orders", self.axis_orders), ("dofs", self.dofs), ("limits", self.limits)):
            if len(seq) != n:
                raise ValueError(f"Skeleton: {label} has {len(seq)} entries for {n} joints.")

    @property
    def n_joints(self) -> int:
        return len(self.names)

    @property
    def edges(self) -> np.ndarray:
        """[J-1, 2] int64 (child, parent) pairs in joint order."""
        child = np.arange(1, self.n_joints, dtype=np.int64)
        return np.stack([child, self.parents[1:]], axis=1)

    @property
    def axis_matrices(self) -> np.ndarray:
        """[J, 3, 3] the C matrix of every joint (from its axis angles and order)."""
        return np.stack([_axis_matrix(a, o) for a, o in zip(self.axis_angles, self.axis_orders, strict=True)])

    def index(self, name: str) -> int:
        """Joint index of a bone name (``"root"`` → 0)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no joint named {name!r} in skeleton {self.source}") from None


@dataclass
class Motion:
    """Channel values of an AMC file.

    Attributes:
        frame_numbers: [T] int64 frame numbers as written in the file (strictly increasing).
        channels: bone name → [T, n_dofs] float64, values as written (angles in ``angle_unit``), columns in
            the skeleton's dof order for that bone. Bones the file never mentions are absent (all zero).
        angle_unit: "deg" or "rad".
        source: the file it was read from.
    """

    frame_numbers: np.ndarray
    channels: dict[str, np.ndarray]
    angle_unit: str = "deg"
    source: str = "<motion>"

    @property
    def n_frames(self) -> int:
        return int(self.frame_numbers.shape[0])


# ------------------------------------------------------------------------------------------------------- ASF
@dataclass
class _Bone:
    line: int
    id: int | None = None
    name: str | None = None
    direction: np.ndarray | None = None
    length: float | None = None
    axis: np.ndarray = field(default_factory=lambda: np.zeros(3))
    axis_order: str = "XYZ"
    dofs: tuple[str, ...] = ()
    limits: list[tuple[float, float]] = field(default_factory=list)
    limits_line: int | None = None


def _floats(src: str, lineno: int, tokens: list[str], count: int | None, what: str) -> list[float]:
    if count is not None and len(tokens) != count:
        raise _error(src, lineno, f"{what} needs {count} numbers but has {len(tokens)}.")
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise _error(src, lineno, f"{what} has a non-numeric value in {' '.join(tokens)!r}.") from None


def _axis_order(src: str, lineno: int, token: str) -> str:
    if sorted(token.lower()) != ["x", "y", "z"]:
        raise _error(src, lineno, f"axis order {token!r} is not a permutation of XYZ.")
    return token.upper()


def read_asf(path: str | os.PathLike) -> Skeleton:
    """Read an Acclaim skeleton file. Unknown sections and keywords are ignored; malformed content raises
    :class:`MocapFormatError`."""
    src = str(path)
    lines = _read_lines(path)

    units = {"mass": 1.0, "length": 1.0, "angle": "deg"}
    name = ""
    root_order: tuple[str, ...] = _DEFAULT_ROOT_ORDER
    root_axis = "XYZ"
    root_position = np.zeros(3)
    root_orientation = np.zeros(3)
    bones: list[_Bone] = []
    bone: _Bone | None = None
    last_key: str | None = None
    hierarchy: list[tuple[int, list[str]]] = []
    seen_hierarchy = False
    section: str | None = None

    def finish_bone(b: _Bone, lineno: int) -> None:
        for attr in ("name", "direction", "length"):
            if getattr(b, attr) is None:
                raise _error(src, b.line, f"the bone block ending on line {lineno} has no {attr!r}.")
        if b.name == "root":
            raise _error(src, b.line, "a bone may not be called 'root'.")
        if any(o.name == b.name for o in bones):
            raise _error(src, b.line, f"bone {b.name!r} is defined twice.")
        norm = float(np.linalg.norm(b.direction))
        if norm == 0.0 and b.length != 0.0:
            raise _error(src, b.line, f"bone {b.name!r} has a zero direction vector.")
        if norm > 0.0:
            b.direction = b.direction / norm
        if b.limits and len(b.limits) != len(b.dofs):
            raise _error(
                src, b.limits_line, f"bone {b.name!r} has {len(b.limits)} limits for {len(b.dofs)} dofs."
            )
        bones.append(b)

    for lineno, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0]
        if not text.strip():
            continue
        if text.lstrip().startswith(":"):
            if bone is not None:
                raise _error(
                    src, lineno, f"section {text.split()[0]!r} starts inside an unfinished bone block."
                )
            head, *rest = text.split()
            section = head[1:].lower()
            if section == "name":
                name = " ".join(rest)
            elif section == "hierarchy":
                seen_hierarchy = True
            continue
        # the Acclaim definition treats commas and parentheses as whitespace
        tokens = text.replace(",", " ").replace("(", " ").replace(")", " ").split()
        key = tokens[0].lower()
        args = tokens[1:]

        if section is None:
            raise _error(src, lineno, f"content {text.strip()!r} appears before the first ':' section.")

        elif section == "units":
            if key in ("mass", "length"):
                units[key] = _floats(src, lineno, args, 1, f"units {key}")[0]
                if units[key] <= 0:
                    raise _error(src, lineno, f"units {key} must be positive.")
            elif key == "angle":
                unit = _ANGLE_UNITS.get(args[0].lower()) if len(args) == 1 else None
                if unit is None:
                    raise _error(src, lineno, f"units angle must be 'deg' or 'rad', not {' '.join(args)!r}.")
                units["angle"] = unit

        elif section == "root":
            if key == "order":
                order = tuple(a.lower() for a in args)
                bad = [a for a in order if a not in _ROOT_CHANNELS]
                if bad or len(set(order)) != len(order):
                    raise _error(
                        src, lineno, f"root order {' '.join(args)!r} is not a list of distinct TX…RZ."
                    )
                root_order = order
            elif key == "axis":
                if len(args) != 1:
                    raise _error(src, lineno, "root axis needs exactly one order token such as XYZ.")
                root_axis = _axis_order(src, lineno, args[0])
            elif key == "position":
                root_position = np.array(_floats(src, lineno, args, 3, "root position"))
            elif key == "orientation":
                root_orientation = np.array(_floats(src, lineno, args, 3, "root orientation"))

        elif section == "bonedata":
            if key == "begin":
                if bone is not None:
                    raise _error(src, lineno, f"'begin' inside the bone block opened on line {bone.line}.")
                bone, last_key = _Bone(line=lineno), None
                continue
            if key == "end":
                if bone is None:
                    raise _error(src, lineno, "'end' without a matching 'begin' in :bonedata.")
                finish_bone(bone, lineno)
                bone = None
                continue
            if bone is None:
                raise _error(src, lineno, f"{text.strip()!r} is outside a begin/end bone block.")
            if _is_number(tokens[0]):  # continuation line (limits)
                if last_key == "limits":
                    key, args = "limits", tokens
                elif last_key in ("id", "name", "direction", "length", "axis", "dof"):
                    raise _error(src, lineno, f"unexpected numbers {text.strip()!r} after {last_key!r}.")
                else:
                    continue  # continuation of an ignored keyword
            last_key = key
            if key == "id":
                if len(args) != 1 or not args[0].lstrip("+-").isdigit():
                    raise _error(src, lineno, f"bone id must be one integer, not {' '.join(args)!r}.")
                bone.id = int(args[0])
            elif key == "name":
                if len(args) != 1:
                    raise _error(src, lineno, f"bone name must be one word, not {' '.join(args)!r}.")
                bone.name = args[0]
            elif key == "direction":
                bone.direction = np.array(_floats(src, lineno, args, 3, "direction"))
            elif key == "length":
                bone.length = _floats(src, lineno, args, 1, "length")[0]
                if not math.isfinite(bone.length) or bone.length < 0:
                    raise _error(src, lineno, f"bone length {args[0]!r} must be a finite number >= 0.")
            elif key == "axis":
                if len(args) not in (3, 4):
                    raise _error(
                        src, lineno, "axis needs three angles and an optional order token such as XYZ."
                    )
                bone.axis = np.array(_floats(src, lineno, args[:3], 3, "axis"))
                if len(args) == 4:
                    bone.axis_order = _axis_order(src, lineno, args[3])
            elif key == "dof":
                dofs = tuple(a.lower() for a in args)
                bad = [a for a in dofs if a not in _BONE_DOFS]
                if not dofs or bad or len(set(dofs)) != len(dofs):
                    raise _error(
                        src, lineno, f"dof {' '.join(args)!r} is not a list of distinct rx ry rz tx ty tz l."
                    )
                bone.dofs = dofs
            elif key == "limits":
                values = _floats(src, lineno, args, None, "limits")
                if len(values) % 2:
                    raise _error(src, lineno, "limits must come in (low high) pairs.")
                bone.limits.extend(zip(values[0::2], values[1::2], strict=True))
                bone.limits_line = bone.limits_line or lineno
            # other keywords (bodymass, cofmass, …) are ignored

        elif section == "hierarchy":
            if key in ("begin", "end"):
                continue
            if len(tokens) < 2:
                raise _error(src, lineno, f"hierarchy line {text.strip()!r} names a parent without children.")
            hierarchy.append((lineno, tokens))
        # any other section (:version, :documentation, unknown ones) is ignored

    if bone is not None:
        raise _error(src, bone.line, "the file ends inside this bone block (no 'end').")
    if bones and not seen_hierarchy:
        raise _error(src, None, "there is no :hierarchy section linking the bones to the root.")

    by_name = {b.name: b for b in bones}
    parent_of: dict[str, tuple[str, int]] = {}
    children: dict[str, list[str]] = {"root": []}
    for lineno, (parent, *kids) in hierarchy:
        if parent != "root" and parent not in by_name:
            raise _error(
                src, lineno, f"the hierarchy names parent {parent!r}, which :bonedata does not define."
            )
        for kid in kids:
            if kid == "root":
                raise _error(src, lineno, "the hierarchy gives the root a parent.")
            if kid not in by_name:
                raise _error(
                    src, lineno, f"the hierarchy names bone {kid!r}, which :bonedata does not define."
                )
            if kid in parent_of:
                raise _error(
                    src,
                    lineno,
                    f"bone {kid!r} already has parent {parent_of[kid][0]!r} (line {parent_of[kid][1]}).",
                )
            parent_of[kid] = (parent, lineno)
            children.setdefault(parent, []).append(kid)

    order: list[str] = []
    parent_index: list[int] = []
    stack: list[tuple[str, int]] = [("root", -1)]
    while stack:
        node, par = stack.pop()
        order.append(node)
        parent_index.append(par)
        me = len(order) - 1
        stack.extend((kid, me) for kid in reversed(children.get(node, [])))
    if len(order) != len(bones) + 1:
        reached = set(order)
        lost = [b for b in bones if b.name not in reached]
        orphans = [b for b in lost if b.name not in parent_of]
        if orphans:
            raise _error(src, orphans[0].line, f"bone {orphans[0].name!r} does not appear in the :hierarchy.")
        raise _error(
            src,
            parent_of[lost[0].name][1],
            f"bones {', '.join(repr(b.name) for b in lost)} form a cycle in the :hierarchy.",
        )

    to_rad = math.pi / 180.0 if units["angle"] == "deg" else 1.0
    joint_bones = [by_name[n] for n in order[1:]]
    return Skeleton(
        names=order,
        parents=np.array(parent_index, dtype=np.int64),
        directions=np.array([np.zeros(3)] + [b.direction for b in joint_bones]).reshape(-1, 3),
        lengths=np.array([0.0] + [b.length for b in joint_bones]),
        axis_angles=np.array([root_orientation] + [b.axis for b in joint_bones]).reshape(-1, 3) * to_rad,
        axis_orders=[root_axis] + [b.axis_order for b in joint_bones],
        dofs=[root_order] + [b.dofs for b in joint_bones],
        limits=[[]] + [list(b.limits) for b in joint_bones],
        root_position=root_position,
        ids=[None] + [b.id for b in joint_bones],
        length_unit=float(units["length"]),
        mass_unit=float(units["mass"]),
        angle_unit=str(units["angle"]),
        name=name,
        source=src,
    )


# ------------------------------------------------------------------------------------------------------- AMC
def read_amc(path: str | os.PathLike, skeleton: Skeleton) -> Motion:
    """Read an Acclaim motion file for ``skeleton``.

    Frames are numbered lines followed by one ``bone v1 v2 …`` line per animated bone, in any order. Every
    frame must give the same set of bones (a frame lacking a bone that other frames give means a truncated or
    damaged file) and every bone line exactly as many values as the bone has dofs; unknown bone names,
    non-numeric or non-finite values, repeated bones and non-increasing frame numbers raise
    :class:`MocapFormatError`. Without a ``:DEGREES`` / ``:RADIANS`` header the ASF angle unit applies.
    """
    src = str(path)
    n_dofs = {n: len(d) for n, d in zip(skeleton.names, skeleton.dofs, strict=True)}
    angle_unit: str | None = None
    frame_numbers: list[int] = []
    frame_lines: list[int] = []
    rows: dict[str, list[list[float]]] = {}
    frames_of: dict[str, list[int]] = {}
    bone_line: dict[str, int] = {}
    in_frame: set[str] = set()

    for lineno, raw in enumerate(_read_lines(path), start=1):
        tokens = raw.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        head = tokens[0]
        if head.startswith(":"):
            if frame_numbers:
                raise _error(src, lineno, f"header keyword {head!r} appears after frame data started.")
            unit = {":DEGREES": "deg", ":RADIANS": "rad"}.get(head.upper())
            if unit is not None:
                if angle_unit is not None and angle_unit != unit:
                    raise _error(src, lineno, "the header declares both :DEGREES and :RADIANS.")
                angle_unit = unit
            continue  # :FULLY-SPECIFIED and unknown header keywords
        if len(tokens) == 1 and head.isdigit():
            number = int(head)
            if frame_numbers and number <= frame_numbers[-1]:
                raise _error(
                    src,
                    lineno,
                    f"frame number {number} does not increase (previous frame was {frame_numbers[-1]}).",
                )
            frame_numbers.append(number)
            frame_lines.append(lineno)
            in_frame = set()
            continue
        if not frame_numbers:
            raise _error(src, lineno, f"bone data {head!r} appears before the first frame number.")
        frame = frame_numbers[-1]
        if head not in n_dofs:
            raise _error(
                src,
                lineno,
                f"frame {frame} names bone {head!r}, which the skeleton {skeleton.source} does not define.",
            )
        if head in in_frame:
            raise _error(src, lineno, f"frame {frame} gives bone {head!r} twice.")
        expected = n_dofs[head]
        if len(tokens) - 1 != expected:
            raise _error(
                src,
                lineno,
                f"frame {frame}, bone {head!r}: expected {expected} values for its dofs "
                f"but found {len(tokens) - 1} (truncated or damaged file).",
            )
        try:
            values = [float(t) for t in tokens[1:]]
        except ValueError:
            raise _error(
                src, lineno, f"frame {frame}, bone {head!r}: non-numeric value in {' '.join(tokens[1:])!r}."
            ) from None
        in_frame.add(head)
        rows.setdefault(head, []).append(values)
        frames_of.setdefault(head, []).append(len(frame_numbers) - 1)
        bone_line.setdefault(head, lineno)

    n_frames = len(frame_numbers)
    if n_frames == 0:
        raise _error(src, None, "the file contains no frames.")
    incomplete = {b: f for b, f in frames_of.items() if len(f) != n_frames}
    if incomplete:
        first_missing = {b: min(set(range(n_frames)) - set(f)) for b, f in incomplete.items()}
        k = min(first_missing.values())
        missing = sorted((b for b, m in first_missing.items() if m == k), key=skeleton.names.index)
        raise _error(
            src,
            frame_lines[k],
            f"frame {frame_numbers[k]} lacks bone(s) "
            f"{', '.join(repr(b) for b in missing)} that other frames give (truncated or damaged file).",
        )

    channels: dict[str, np.ndarray] = {}
    for bone, values in rows.items():
        arr = np.array(values, dtype=np.float64).reshape(n_frames, n_dofs[bone])
        bad = ~np.isfinite(arr)
        if bad.any():
            k = int(np.argwhere(bad)[0, 0])
            raise _error(src, frame_lines[k], f"frame {frame_numbers[k]}, bone {bone!r}: non-finite value.")
        channels[bone] = arr
    return Motion(
        frame_numbers=np.array(frame_numbers, dtype=np.int64),
        channels=channels,
        angle_unit=angle_unit or skeleton.angle_unit,
        source=src,
    )


# --------------------------------------------------------------------------------------- forward kinematics
def forward_kinematics(skeleton: Skeleton, motion: Motion) -> np.ndarray:
    """Joint positions [T, J, 3] float64 in ASF length units (joint order of ``skeleton``); see module doc."""
    n_frames, n_joints = motion.n_frames, skeleton.n_joints
    to_rad = math.pi / 180.0 if motion.angle_unit == "deg" else 1.0
    unknown = set(motion.channels) - set(skeleton.names)
    if unknown:
        raise ValueError(f"motion {motion.source} has bones {sorted(unknown)} that the skeleton lacks.")
    axis_c = skeleton.axis_matrices
    positions = np.empty((n_frames, n_joints, 3))
    rotations = np.empty((n_frames, n_joints, 3, 3))
    for j, name in enumerate(skeleton.names):
        dofs = skeleton.dofs[j]
        values = motion.channels.get(name)
        if values is not None and values.shape != (n_frames, len(dofs)):
            raise ValueError(
                f"motion {motion.source}: bone {name!r} has channels of shape {values.shape}, "
                f"expected {(n_frames, len(dofs))}."
            )
        rot_axes = [_AXIS_INDEX[d[1]] for d in dofs if d in ("rx", "ry", "rz")]
        if values is not None and rot_axes:
            cols = [k for k, d in enumerate(dofs) if d in ("rx", "ry", "rz")]
            local = _fixed_axis_euler(rot_axes, values[:, cols] * to_rad)
            local = axis_c[j] @ local @ axis_c[j].T
        else:
            local = np.broadcast_to(np.eye(3), (n_frames, 3, 3))
        parent = skeleton.parents[j]
        if parent < 0:
            rotations[:, j] = local
            translation = np.zeros((n_frames, 3))
            if values is not None:
                for k, d in enumerate(dofs):
                    if d in ("tx", "ty", "tz"):
                        translation[:, _AXIS_INDEX[d[1]]] = values[:, k]
            positions[:, j] = skeleton.root_position + translation
        else:
            rotations[:, j] = rotations[:, parent] @ local
            offset = skeleton.lengths[j] * skeleton.directions[j]
            positions[:, j] = positions[:, parent] + rotations[:, j] @ offset
    return positions


def load_trial(asf_path: str | os.PathLike, amc_path: str | os.PathLike) -> tuple[np.ndarray, Skeleton]:
    """Read a skeleton and one motion of it: (joint positions [T, J, 3] float64, skeleton)."""
    skeleton = read_asf(asf_path)
    return forward_kinematics(skeleton, read_amc(amc_path, skeleton)), skeleton


# ---------------------------------------------------------------------------------------------- graph helper
def tree_distance_edges(edges: np.ndarray, n_joints: int, max_hops: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (i, j), i ≠ j, whose distance along ``edges`` is 1 … ``max_hops``.

    Args:
        edges: [E, 2] undirected connections (e.g. ``Skeleton.edges``, (child, parent)).
        n_joints: number of nodes.
        max_hops: largest hop count kept (≥ 1).

    Returns:
        ``edge_index`` [2, P] int64 sorted by (i, j) and ``hops`` [P] int64. Both directions of every pair
        appear. For the 31-joint CMU skeleton and ``max_hops=2``: 130 pairs (60 at 1 hop, 70 at 2 hops).
    """
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.shape[1] != 2 or (edges.size and not np.issubdtype(edges.dtype, np.integer)):
        raise ValueError(f"edges must be an integer array of shape [E, 2], got {edges.dtype} {edges.shape}.")
    if int(max_hops) != max_hops or max_hops < 1:
        raise ValueError(f"max_hops must be an integer >= 1, got {max_hops!r}.")
    if edges.size and (edges.min() < 0 or edges.max() >= n_joints):
        raise ValueError(f"edges refer to nodes outside 0 … {n_joints - 1}.")
    neighbours: list[set[int]] = [set() for _ in range(n_joints)]
    for a, b in edges.tolist():
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    pairs: list[tuple[int, int, int]] = []
    for start in range(n_joints):
        dist = {start: 0}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if dist[node] == max_hops:
                continue
            for nb in neighbours[node]:
                if nb not in dist:
                    dist[nb] = dist[node] + 1
                    queue.append(nb)
        pairs.extend((start, other, d) for other, d in dist.items() if d > 0)
    pairs.sort()
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 3)
    return np.ascontiguousarray(arr[:, :2].T), arr[:, 2].copy()

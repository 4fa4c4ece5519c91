"""From (state, topology) to the model's ``GraphBatch``: interaction graph and invariant features.

The featurizer is described by a small JSON-able spec stored in the dataset (and in every checkpoint), so that
training, evaluation, rollouts and the integrations build exactly the same inputs:

    {"global_graph": {"kind": "complete"} | {"kind": "radius", "cutoff": 10.0, "envelope": 2.0} | {"kind": "static"},
     "node": ["speed", "charge"], "edge": ["charge_product", "dist2"], "local_edge": ["dist2"],
     "scales": {"charge": 0.5}, "classes": {"element": 8}, "vertical_axis": 1}

Node features (one or more columns each):
    speed             ‖v_i‖, times ``scales["speed"]`` if present (e.g. 1 / RMS training speed)
    <prop>            a stored node property, multiplied by ``scales[<prop>]`` if present (dataset statistic,
                      fixed at ingest time, so features never depend on batch composition)
    one_hot:<prop>    one-hot of an integer node property with ``classes[<prop>]`` classes
    height            x_i[vertical_axis] · scales["height"] (breaks full E(3): keeps rotations about the
                      vertical axis and horizontal translations only)
    ones              the constant 1
Smooth cutoff: a radius graph with ``"envelope": w`` (Å, 0 < w ≤ cutoff) gives every global edge the weight
    s(t) = 1 − 10t³ + 15t⁴ − 6t⁵,   t = clamp((d_ij − (cutoff − w)) / w, 0, 1)
(``GraphBatch.edge_weight``): 1 inside cutoff − w, falling to 0 at the cutoff with zero first and second
derivatives, so an atom crossing the cutoff changes the model's output continuously (the layers multiply each
global-edge message by the weight and take weighted means). Without ``envelope`` the cutoff is hard (the papers').

Edge features (global and local edge sets alike):
    dist2 / dist      ‖x_i − x_j‖² / ‖x_i − x_j‖ at time t
    charge_product    q_i q_j  (from node property ``charge``)
    same:<prop>       1 if node property <prop> is equal at both ends else 0
    <prop>            a stored static edge property (e.g. ``hops``, ``length0``), times ``scales[<prop>]``

``"velocity": false`` (recipe ``[data] velocity_input = false``): the model is given zero velocities and no
``speed`` feature, a propagator of positions only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import UserError
from .graph import GraphBatch
from .neighbors import complete_graph, radius_graph
from .topology import BatchTopology, EdgeSet


class FeatureError(UserError, ValueError):
    """A feature spec names something the dataset does not have."""


@dataclass
class FeatureSpec:
    global_graph: dict = field(default_factory=lambda: {"kind": "complete"})
    node: list[str] = field(default_factory=lambda: ["speed"])
    edge: list[str] = field(default_factory=lambda: ["dist2"])
    local_edge: list[str] = field(default_factory=list)
    scales: dict[str, float] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    vertical_axis: int = 1
    #: False: the model's input velocities are zero (a propagator of positions only)
    velocity: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise FeatureError(f"unknown feature-spec keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return {
            "global_graph": dict(self.global_graph),
            "node": list(self.node),
            "edge": list(self.edge),
            "local_edge": list(self.local_edge),
            "scales": dict(self.scales),
            "classes": dict(self.classes),
            "vertical_axis": self.vertical_axis,
            **({} if self.velocity else {"velocity": False}),
        }

    def without_velocity(self) -> FeatureSpec:
        """This spec for a propagator of positions only: no ``speed`` node feature, zero input velocities."""
        d = self.to_dict()
        d["node"] = [n for n in d["node"] if n != "speed"]
        d["velocity"] = False
        return FeatureSpec.from_dict(d)

    # -- dimensions --------------------------------------------------------------------------------------
    def _width(self, name: str) -> int:
        if name.startswith("one_hot:"):
            prop = name.split(":", 1)[1]
            if prop not in self.classes:
                raise FeatureError(f"feature {name!r} needs the number of classes of {prop!r}")
            return int(self.classes[prop])
        return 1

    @property
    def node_dim(self) -> int:
        return sum(self._width(n) for n in self.node)

    @property
    def edge_dim(self) -> int:
        return len(self.edge)

    @property
    def local_edge_dim(self) -> int:
        return len(self.local_edge)

    @property
    def is_e3_invariant(self) -> bool:
        """False when a feature (height) breaks full E(3) symmetry."""
        return "height" not in self.node


class Featurizer:
    """Builds ``GraphBatch`` objects from states and a ``BatchTopology`` (all tensors on one device)."""

    def __init__(self, spec: FeatureSpec | dict):
        self.spec = spec if isinstance(spec, FeatureSpec) else FeatureSpec.from_dict(spec)
        kind = self.spec.global_graph.get("kind")
        if kind not in ("complete", "radius", "static"):
            raise FeatureError(f"unknown global graph kind {kind!r} (complete, radius or static)")
        self.envelope = self._envelope_width()
        self._complete_cache: tuple[Tensor, int, Tensor] | None = None

    # -- graphs ------------------------------------------------------------------------------------------
    def global_edges(self, x: Tensor, topo: BatchTopology) -> EdgeSet:
        kind = self.spec.global_graph["kind"]
        if kind == "static":
            if "global" not in topo.edge_sets:
                raise FeatureError("the feature spec asks for a static global graph but the dataset has none")
            return topo.edge_sets["global"]
        if kind == "complete":
            cached = self._complete_cache  # (ptr, its in-place version, edge index)
            if cached is not None and ((cached[0] is topo.ptr and cached[1] == topo.ptr._version)  # a rollout:
                                       or (cached[0].shape == topo.ptr.shape            # no read, no device sync
                                           and torch.equal(cached[0], topo.ptr))):
                return EdgeSet(cached[2])
            index = complete_graph(topo.ptr)
            self._complete_cache = (topo.ptr, topo.ptr._version, index)
            return EdgeSet(index)
        cutoff = float(self.spec.global_graph["cutoff"])
        return EdgeSet(radius_graph(x.detach(), cutoff, topo.batch))

    def _envelope_width(self) -> float | None:
        graph = self.spec.global_graph
        if "envelope" not in graph or graph.get("envelope") is None:
            return None
        if graph["kind"] != "radius":
            raise FeatureError("a smooth cutoff (global_graph envelope) needs a radius graph")
        width, cutoff = float(graph["envelope"]), float(graph["cutoff"])
        if not 0.0 < width <= cutoff:  # also rejects NaN
            raise FeatureError(f"the smooth-cutoff width (envelope = {graph['envelope']}) must lie in (0, cutoff = "
                               f"{cutoff:g}]")
        return width

    def edge_weights(self, x: Tensor, edges: EdgeSet) -> Tensor | None:
        """[E] smooth-cutoff weights s(t) of the global edges (see the module docstring), or None (hard cutoff)."""
        if self.envelope is None:
            return None
        i, j = edges.index
        d = (x[i] - x[j]).norm(dim=-1)
        cutoff = float(self.spec.global_graph["cutoff"])
        t = ((d - (cutoff - self.envelope)) / self.envelope).clamp(0.0, 1.0)
        return 1.0 - t ** 3 * (10.0 - 15.0 * t + 6.0 * t * t)

    # -- features ----------------------------------------------------------------------------------------
    def node_features(self, x: Tensor, v: Tensor, topo: BatchTopology) -> Tensor:
        cols = []
        for name in self.spec.node:
            if name == "speed":
                cols.append(v.norm(dim=-1, keepdim=True) * self.spec.scales.get("speed", 1.0))
            elif name == "ones":
                cols.append(x.new_ones(x.shape[0], 1))
            elif name == "height":
                axis = self.spec.vertical_axis
                cols.append(x[:, axis : axis + 1] * self.spec.scales.get("height", 1.0))
            elif name.startswith("one_hot:"):
                prop = name.split(":", 1)[1]
                ids = self._node_prop(topo, prop).long()
                cols.append(torch.nn.functional.one_hot(ids, self.spec.classes[prop]).to(x.dtype))
            else:
                val = self._node_prop(topo, name).to(x.dtype).reshape(x.shape[0], -1)
                cols.append(val * self.spec.scales.get(name, 1.0))
        if not cols:
            return x.new_zeros(x.shape[0], 0)
        return torch.cat(cols, dim=-1)

    def edge_features(self, names: list[str], x: Tensor, edges: EdgeSet, topo: BatchTopology) -> Tensor:
        i, j = edges.index
        cols = []
        rel = None
        for name in names:
            if name in ("dist2", "dist"):
                if rel is None:
                    rel = x[i] - x[j]
                d2 = (rel * rel).sum(-1)
                cols.append(d2 if name == "dist2" else d2.sqrt())
            elif name == "charge_product":
                q = self._node_prop(topo, "charge").to(x.dtype)
                cols.append(q[i] * q[j])
            elif name.startswith("same:"):
                p = self._node_prop(topo, name.split(":", 1)[1])
                cols.append((p[i] == p[j]).to(x.dtype))
            elif name in edges.props:
                cols.append(edges.props[name].to(x.dtype) * self.spec.scales.get(name, 1.0))
            else:
                raise FeatureError(f"edge feature {name!r} is neither built in nor an edge property of the dataset")
        if not cols:
            return x.new_zeros(i.shape[0], 0)
        return torch.stack(cols, dim=-1)

    def _node_prop(self, topo: BatchTopology, name: str) -> Tensor:
        try:
            return topo.node_props[name]
        except KeyError:
            raise FeatureError(f"feature needs node property {name!r}, which the dataset does not have") from None

    def __call__(self, x: Tensor, v: Tensor, topo: BatchTopology) -> GraphBatch:
        """Build the model input for states ``x``, ``v`` [ΣN, 3] on topology ``topo`` (``v`` replaced by zeros when
        the spec's ``velocity`` is False)."""
        if not self.spec.velocity:
            v = torch.zeros_like(x)
        glob = self.global_edges(x, topo)
        local = topo.edge_sets.get("local")
        if local is None:
            local = EdgeSet(torch.zeros(2, 0, dtype=torch.long, device=x.device))
        return GraphBatch(
            x=x,
            v=v,
            h=self.node_features(x, v, topo),
            edge_index=glob.index,
            edge_attr=self.edge_features(self.spec.edge, x, glob, topo),
            local_edge_index=local.index,
            local_edge_attr=self.edge_features(self.spec.local_edge, x, local, topo),
            batch=topo.batch,
            ptr=topo.ptr,
            edge_weight=self.edge_weights(x, glob),
        )

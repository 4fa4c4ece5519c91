"""Export a trained model as a self-contained ``torch.export`` program that runs with torch alone.

    from mdsurrogate.apps.export import export_model
    res = export_model("runs/cu_emt", "cu_emt.pt2")            # or a propagator run; dtype="float64"

    # elsewhere, with torch only (no mdsurrogate):
    import json, torch
    extra = {"mdsurrogate.json": "", "neighbors.py": ""}
    program = torch.export.load("cu_emt.pt2", extra_files=extra).module()
    meta = json.loads(extra["mdsurrogate.json"])               # kind, inputs, outputs, units, cutoff, …

The archive is a ``torch.export.save`` file (``.pt2``) holding the model's ATen graph and weights (or, with
``aot_inductor=True``, an AOTInductor package of compiled native code: ``torch._inductor.aoti_load_package``), plus
two extra files: ``mdsurrogate.json`` (what the program is: kind, input and output signature with shapes and
units, cutoff, elements, feature spec, Δ, versions) and ``neighbors.py`` (a pure-torch neighbour search,
:mod:`mdsurrogate.apps.export_neighbors`, copied verbatim).

**The graph is an input.** A radius graph has as many edges as the positions make, a shape no traced program can
fix in advance, so the exported programs take the edges (and, for potentials, their lattice shifts) as inputs,
with the numbers of nodes, edges and graphs free (dynamic dimensions). Build them with ``neighbors.py`` or any
search that follows the same convention (receiver first, both directions, r_ij = x_i − x_j − s·C).

Potentials (``kind = "potential"``)::

    energy [B], atom_energies [N], forces [N, 3], stress [B, 3, 3] = program(
        numbers [N] int64, positions [N, 3], cell [B, 3, 3], batch [N] int64, edge_index [2, E] int64, shifts [E, 3])

Å, eV, eV/Å, eV/Å³ (ASE's sign: stress = (1/V) ∂E/∂ε); free structures have a zero cell and a NaN stress. Forces
and stress are part of the program (the backward pass is traced into it), so no autograd is needed at the call.

Propagators (``kind = "propagator"``)::

    x_next [N, 3], v_next [N, 3] = program(
        x [N, 3], v [N, 3], batch [N] int64, ptr [B + 1] int64, edge_index [2, E] int64,
        local_edge_index [2, E_l] int64, node_props {name: [N]}, edge_props {name: [E]}, local_edge_props {name: [E_l]})

in the dataset's units (``meta["units"]``); one call advances Δ (``meta["delta_time"]``). The node and edge
features (speeds, charges, distances, one-hot elements, …) are computed inside the program from the listed raw
properties, exactly as mdsurrogate's featurizer does; ``meta["global_graph"]`` says which graph the model was trained
on (``complete``: all pairs of each graph; ``radius`` with a cutoff; ``static``: the dataset's stored global
edges, to be passed as ``edge_index``). A stochastic propagator is exported as its mean step. A checkpoint trained on
MD data carries an input speed limit (``meta["input_speed_limit"]``): the program shortens any faster input
velocity to it before the model sees it, as ``Surrogate.predict`` does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.graph import GraphBatch, ptr_to_batch
from ..data.neighbors import complete_graph, graph_cells, neighbor_list
from ..data.topology import EdgeSet
from ..device import dtype_name, resolve_dtype
from ..errors import UserError
from ..io.atomic import atomic_file, refuse_existing
from ..simulation.surrogate import cap_speed
from ..training.checkpoint import Checkpoint

FORMAT = "mdsurrogate-export"
FORMAT_VERSION = 1
META_FILE = "mdsurrogate.json"
NEIGHBORS_FILE = "neighbors.py"
_BUILTIN_NODE = {"speed", "ones", "height"}
_BUILTIN_EDGE = {"dist", "dist2", "charge_product"}

__all__ = ["ExportError", "ExportResult", "export_model", "load_exported", "read_extras"]


class ExportError(UserError, RuntimeError):
    """The model cannot be exported (or the exported program does not reproduce it)."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote: the archive, its metadata and the check against the eager model."""

    path: Path
    kind: str
    model: str
    dtype: str
    seconds: float
    max_abs_error: float  # exported vs eager, on two example batches of different sizes
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "model": self.model, "dtype": self.dtype,
                "seconds": round(self.seconds, 2), "max_abs_error": self.max_abs_error,
                "inputs": [i["name"] for i in self.meta.get("inputs", [])],
                "outputs": [o["name"] for o in self.meta.get("outputs", [])]}


# ----------------------------------------------------------------------------------------------------------
# programs: the model with its graph (and, for potentials, the derivatives) as plain tensor inputs and outputs
# ----------------------------------------------------------------------------------------------------------


class PotentialProgram(nn.Module):
    """A potential's :meth:`~mdsurrogate.models.potential.EGNNPotential.evaluate` on a given graph, with forces and
    stress (see the module docstring for the signature)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, numbers: Tensor, positions: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor,
                shifts: Tensor):
        species = self.model.z_to_index[numbers]
        out = self.model.evaluate(species, positions, batch, cell, edge_index, shifts, cell.shape[0],
                                  compute_forces=True, compute_stress=True, create_graph=False)
        return out["energy"], out["atom_energies"], out["forces"], out["stress"]


class _Topology:
    """The part of a ``BatchTopology`` the featurizer reads (node properties), without derived fields."""

    def __init__(self, node_props: dict[str, Tensor]):
        self.node_props = node_props


class PropagatorProgram(nn.Module):
    """Featurizer + propagator mean step on given graphs (see the module docstring for the signature); input
    velocities faster than ``speed_limit`` are shortened to it (``simulation.surrogate.cap_speed``)."""

    def __init__(self, model: nn.Module, featurizer, speed_limit: float = math.inf):
        super().__init__()
        self.model = model
        self.featurizer = featurizer
        self.speed_limit = float(speed_limit)

    def forward(self, x: Tensor, v: Tensor, batch: Tensor, ptr: Tensor, edge_index: Tensor, local_edge_index: Tensor,
                node_props: dict[str, Tensor], edge_props: dict[str, Tensor], local_edge_props: dict[str, Tensor]):
        if math.isfinite(self.speed_limit):
            v = cap_speed(v, self.speed_limit)
        f = self.featurizer
        topo = _Topology(node_props)
        glob, local = EdgeSet(edge_index, edge_props), EdgeSet(local_edge_index, local_edge_props)
        gb = GraphBatch(x=x, v=v, h=f.node_features(x, v, topo), edge_index=edge_index,
                        edge_attr=f.edge_features(f.spec.edge, x, glob, topo), local_edge_index=local_edge_index,
                        local_edge_attr=f.edge_features(f.spec.local_edge, x, local, topo), batch=batch, ptr=ptr,
                        edge_weight=f.edge_weights(x, glob))
        pred = self.model(gb)
        return pred.x, pred.v


@contextlib.contextmanager
def _traceable_aggregation():
    """While exporting: message sums by ``index_add`` and degrees by a sum of ones, never a data-dependent branch.

    ``models.scatter.Aggregator`` picks ``segment_reduce`` when it finds the receiver index sorted, a check on the
    tensor's values that a traced program cannot make; the index_add path it otherwise takes gives the same sums
    (in another order: equal to float rounding). Scoped to the export call.
    """
    from ..models import scatter

    original = scatter.Aggregator.__init__

    def init(self, index: Tensor, dim_size: int):
        self.index, self.dim_size, self._inv = index, dim_size, None
        self.counts = torch.zeros(dim_size, dtype=torch.long, device=index.device).index_add_(
            0, index, torch.ones_like(index))
        self.sorted = False

    scatter.Aggregator.__init__ = init
    try:
        yield
    finally:
        scatter.Aggregator.__init__ = original


# ----------------------------------------------------------------------------------------------------------
# example inputs (the program is traced on these; two batches of different sizes check it)
# ----------------------------------------------------------------------------------------------------------


def _potential_example(model, dtype, seed: int, scale: int = 0):
    """Two structures of the model's elements: a periodic simple-cubic crystal and a free cluster."""
    g = torch.Generator().manual_seed(seed)
    cutoff = float(model.cutoff)
    a = 0.55 * cutoff
    k = 3 + scale
    grid = torch.cartesian_prod(*[torch.arange(k, dtype=torch.float64)] * 3) * a
    crystal = grid + 0.05 * a * torch.randn(grid.shape, generator=g, dtype=torch.float64)
    m = 5 + 2 * scale
    cluster = torch.arange(m, dtype=torch.float64)[:, None] * torch.tensor([0.6, 0.2, 0.1]) * cutoff
    cluster = cluster + 0.05 * cutoff * torch.randn(cluster.shape, generator=g, dtype=torch.float64)
    x = torch.cat([crystal, cluster])
    elements = torch.tensor(model.elements)
    numbers = elements[torch.randint(0, len(elements), (x.shape[0],), generator=g)]
    batch = torch.cat([torch.zeros(crystal.shape[0], dtype=torch.long), torch.ones(m, dtype=torch.long)])
    cell = torch.stack([torch.eye(3, dtype=torch.float64) * (k * a), torch.zeros(3, 3, dtype=torch.float64)])
    cell[0, 0, 1] = 0.1 * a  # triclinic
    pbc = torch.tensor([[True, True, True], [False, False, False]])
    cell64, pbc_t = graph_cells(cell, pbc, 2, "cpu")
    edge_index, shifts = neighbor_list(x.to(dtype), cutoff, batch, cell64, pbc_t)
    return (numbers, x.to(dtype), cell.to(dtype), batch, edge_index, shifts.to(dtype))


def _node_prop_names(spec) -> tuple[list[str], dict[str, int]]:
    """Raw node properties the feature spec reads, and the integer ones (with their number of classes)."""
    names, ints = set(), {}
    for name in spec.node:
        if name in _BUILTIN_NODE:
            continue
        if name.startswith("one_hot:"):
            prop = name.split(":", 1)[1]
            names.add(prop)
            ints[prop] = int(spec.classes.get(prop, 2))
        else:
            names.add(name)
    for name in list(spec.edge) + list(spec.local_edge):
        if name == "charge_product":
            names.add("charge")
        elif name.startswith("same:"):
            prop = name.split(":", 1)[1]
            names.add(prop)
            ints.setdefault(prop, 3)
    return sorted(names), ints


def _edge_prop_names(names: list[str]) -> list[str]:
    return sorted(n for n in names if n not in _BUILTIN_EDGE and not n.startswith("same:"))


def _propagator_example(featurizer, dtype, seed: int, scale: int = 0):
    """Two graphs (5 + scale and 7 + scale nodes) with random states, complete global graphs, chain local graphs
    and random values for every property the features read."""
    spec = featurizer.spec
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([5 + scale, 7 + scale])
    ptr = torch.zeros(3, dtype=torch.long)
    ptr[1:] = torch.cumsum(sizes, 0)
    n = int(ptr[-1])
    batch = ptr_to_batch(ptr)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2
    v = torch.randn(n, 3, generator=g, dtype=torch.float64)
    edge_index = complete_graph(ptr)
    first = torch.arange(n)
    chain = first[(first + 1 < n) & (batch == batch[(first + 1).clamp(max=n - 1)])]
    local = torch.cat([torch.stack([chain, chain + 1]), torch.stack([chain + 1, chain])], dim=1)
    local = local[:, torch.argsort(local[0] * n + local[1])]
    names, ints = _node_prop_names(spec)
    node_props = {}
    for name in names:
        if name in ints:
            node_props[name] = torch.randint(0, ints[name], (n,), generator=g)
        elif name == "charge":
            node_props[name] = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(dtype)
        else:
            node_props[name] = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    edge_props = {k: torch.rand(edge_index.shape[1], generator=g, dtype=torch.float64).to(dtype)
                  for k in _edge_prop_names(spec.edge)}
    local_props = {k: torch.rand(local.shape[1], generator=g, dtype=torch.float64).to(dtype)
                   for k in _edge_prop_names(spec.local_edge)}
    return (x.to(dtype), v.to(dtype), batch, ptr, edge_index, local, node_props, edge_props, local_props)


# ----------------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------------


def _max_error(a, b) -> float:
    return max(float((u.detach().double() - w.detach().double()).abs().nan_to_num(0.0).max()) if u.numel() else 0.0
               for u, w in zip(a, b, strict=True))


def _export_potential(ck: Checkpoint, dtype: torch.dtype):
    from torch.fx.experimental.proxy_tensor import make_fx

    model = ck.build_model("cpu", dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    program = PotentialProgram(model).eval()
    args = _potential_example(model, dtype, seed=0)
    # trace forward + backward into one graph of ATen ops (torch.export cannot trace autograd.grad itself)
    graph = make_fx(program, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)
    n, e, b = torch.export.Dim("atoms", min=1), torch.export.Dim("edges", min=0), torch.export.Dim("graphs", min=1)
    dynamic = ({0: n}, {0: n}, {0: b}, {0: n}, {1: e}, {0: e})
    ep = torch.export.export(graph, args, dynamic_shapes=dynamic, strict=False)
    checks = [args, _potential_example(model, dtype, seed=1, scale=1)]
    return ep, program, checks


def _export_propagator(ck: Checkpoint, dtype: torch.dtype):
    model = ck.build_model("cpu", dtype)
    featurizer = ck.featurizer()
    limit = float((ck.extra or {}).get("input_speed_limit", math.inf))  # training.limits; inf: none
    program = PropagatorProgram(model, featurizer, speed_limit=limit).eval()
    args = _propagator_example(featurizer, dtype, seed=0)
    n, b = torch.export.Dim("nodes", min=1), torch.export.Dim("graphs", min=1)
    e, el = torch.export.Dim("edges", min=0), torch.export.Dim("local_edges", min=0)
    dynamic = ({0: n}, {0: n}, {0: n}, {0: b + 1}, {1: e}, {1: el},
               {k: {0: n} for k in args[6]}, {k: {0: e} for k in args[7]}, {k: {0: el} for k in args[8]})
    with _traceable_aggregation(), torch.no_grad():
        ep = torch.export.export(program, args, dynamic_shapes=dynamic, strict=False)
    checks = [args, _propagator_example(featurizer, dtype, seed=1, scale=3)]
    return ep, program, checks


def _signature(kind: str, ck: Checkpoint, dt: str) -> tuple[list[dict], list[dict]]:
    if kind == "potential":
        inputs = [
            {"name": "numbers", "shape": "[N]", "dtype": "int64", "meaning": "atomic numbers"},
            {"name": "positions", "shape": "[N, 3]", "dtype": dt, "unit": "Å"},
            {"name": "cell", "shape": "[B, 3, 3]", "dtype": dt, "unit": "Å",
             "meaning": "lattice vectors as rows, one cell per structure; zeros for a free structure"},
            {"name": "batch", "shape": "[N]", "dtype": "int64", "meaning": "structure of each atom, sorted 0…B−1"},
            {"name": "edge_index", "shape": "[2, E]", "dtype": "int64",
             "meaning": "(receiver i, sender j) of every pair within the cutoff, both directions, one per image"},
            {"name": "shifts", "shape": "[E, 3]", "dtype": dt,
             "meaning": "integer lattice shifts s with r_ij = x_i − x_j − s·cell (zeros for free structures)"},
        ]
        outputs = [
            {"name": "energy", "shape": "[B]", "unit": "eV"},
            {"name": "atom_energies", "shape": "[N]", "unit": "eV"},
            {"name": "forces", "shape": "[N, 3]", "unit": "eV/Å", "meaning": "−∂E/∂x"},
            {"name": "stress", "shape": "[B, 3, 3]", "unit": "eV/Å³",
             "meaning": "(1/V) ∂E/∂ε, ASE's sign; NaN for a structure without a cell volume"},
        ]
        return inputs, outputs
    spec = ck.featurizer().spec
    units = ck.dataset.units or {}
    length, time_u = units.get("length", "1"), units.get("time", "1")
    names, ints = _node_prop_names(spec)
    inputs = [
        {"name": "x", "shape": "[N, 3]", "dtype": dt, "unit": length, "meaning": "positions at t"},
        {"name": "v", "shape": "[N, 3]", "dtype": dt, "unit": f"{length}/{time_u}", "meaning": "velocities at t"
         + (" (per frame: see the dataset's velocity convention)" if ck.dataset.md else "")},
        {"name": "batch", "shape": "[N]", "dtype": "int64", "meaning": "graph of each node, sorted 0…B−1"},
        {"name": "ptr", "shape": "[B + 1]", "dtype": "int64", "meaning": "node offsets: graph g owns ptr[g]:ptr[g+1]"},
        {"name": "edge_index", "shape": "[2, E]", "dtype": "int64",
         "meaning": "global graph (receiver, sender), node indices into the batch: " + json.dumps(spec.global_graph)},
        {"name": "local_edge_index", "shape": "[2, E_l]", "dtype": "int64",
         "meaning": "local graph (bonds, bones, complexes); [2, 0] when the model has none"},
        {"name": "node_props", "shape": "{name: [N]}", "keys": names,
         "meaning": "raw per-node properties" + (f"; integer classes: {ints}" if ints else "")},
        {"name": "edge_props", "shape": "{name: [E]}", "keys": _edge_prop_names(spec.edge)},
        {"name": "local_edge_props", "shape": "{name: [E_l]}", "keys": _edge_prop_names(spec.local_edge)},
    ]
    outputs = [
        {"name": "x_next", "shape": "[N, 3]", "unit": length, "meaning": "positions one Δ later"},
        {"name": "v_next", "shape": "[N, 3]", "unit": f"{length}/{time_u}", "meaning": "velocities one Δ later"},
    ]
    return inputs, outputs


def _check(callable_, program, checks, kind: str) -> float:
    """Largest deviation of ``callable_`` from the eager ``program`` over the example batches, relative to the
    outputs' scale (at least 1)."""
    worst = 0.0
    for args in checks:
        with torch.no_grad() if kind == "propagator" else contextlib.nullcontext():
            ref = program(*args)
            got = callable_(*args)
        scale = max(float(r.detach().double().abs().nan_to_num(0.0).max()) if r.numel() else 0.0 for r in ref)
        worst = max(worst, _max_error(ref, got) / max(scale, 1.0))
    return worst


def _write_aot_inductor(ep, out: Path, extra: dict, program, checks, ck: Checkpoint, tol: float,
                        overwrite: bool) -> float:
    """Compile ``ep`` with AOTInductor into a package beside ``out``, add the extra files, check it, publish it."""
    import zipfile

    from torch._inductor import aoti_compile_and_package, aoti_load_package

    from ..io.atomic import publish, reserve_partial

    partial = reserve_partial(out)
    try:
        try:
            aoti_compile_and_package(ep, package_path=str(partial))
        except Exception as exc:  # a missing or failing C++ compiler, an unsupported op
            if os.environ.get("MDSURROGATE_DEBUG"):
                raise
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise ExportError(f"AOTInductor could not compile {ck.model_name!r} ({exc.__class__.__name__}: "
                              f"{first[:200]}); export without --aot-inductor for a torch.export program") from None
        with zipfile.ZipFile(partial, "a") as z:
            root = z.namelist()[0].split("/", 1)[0]
            for name, text in extra.items():
                z.writestr(f"{root}/extra/{name}", text)
        worst = _check(aoti_load_package(str(partial)), program, checks, ck.kind)
        if not worst <= tol:
            raise ExportError(f"the AOTInductor package of {ck.model_name!r} differs from the eager model by "
                              f"{worst:.3g} (relative), more than {tol:g}")
        publish(partial, out, overwrite=overwrite)
    finally:
        if partial.exists():
            partial.unlink()
    return worst


def export_model(checkpoint: str | os.PathLike | Checkpoint, out: str | os.PathLike, *, dtype="float32",
                 overwrite: bool = False, tolerance: float | None = None, aot_inductor: bool = False) -> ExportResult:
    """Export a potential or propagator checkpoint (file or run directory) to ``out`` (a ``.pt2`` archive).

    The exported program is checked against the eager model on two example batches of different sizes; an
    :class:`ExportError` is raised (and nothing is written) when they differ by more than ``tolerance``
    (default 1e-4 for float32, 1e-9 for float64, relative to the output scale).

    ``aot_inductor=True`` compiles the program with AOTInductor (a C++ compiler is needed; a minute or more) into a
    package of native code for this kind of machine (CPU here, or the GPU it was exported on), loaded with
    ``torch._inductor.aoti_load_package(OUT)`` from Python or ``AOTIModelPackageLoader`` from C++; the package is
    checked against the model like the program, and carries the same extra files.
    """
    t0 = time.perf_counter()
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    out = Path(out)
    refuse_existing(out, overwrite)
    dt = resolve_dtype(dtype)
    try:
        if ck.kind == "potential":
            ep, program, checks = _export_potential(ck, dt)
        else:
            ep, program, checks = _export_propagator(ck, dt)
    except UserError:
        raise
    except Exception as exc:  # torch.export's errors are long; one sentence here, the rest with MDSURROGATE_DEBUG
        if os.environ.get("MDSURROGATE_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ExportError(f"model {ck.model_name!r} cannot be exported with torch.export "
                          f"({exc.__class__.__name__}: {first[:200]})") from None
    worst = _check(ep.module(), program, checks, ck.kind)
    tol = tolerance if tolerance is not None else (1e-4 if dt == torch.float32 else 1e-9)
    if not worst <= tol:
        raise ExportError(f"the exported {ck.model_name!r} differs from the eager model by {worst:.3g} "
                          f"(relative), more than {tol:g}")
    inputs, outputs = _signature(ck.kind, ck, dtype_name(dt))
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": ck.kind, "model": ck.model_name,
        "hparams": ck.hparams, "dtype": dtype_name(dt), "inputs": inputs, "outputs": outputs,
        "units": dict(ck.dataset.units or ({"length": "Å", "energy": "eV"} if ck.kind == "potential" else {})),
        "versions": {**dict(ck.versions or {}), "exported_with_torch": str(torch.__version__)},
        "checkpoint": str(ck.path) if ck.path else None, "neighbors": NEIGHBORS_FILE,
        "package": "aot_inductor" if aot_inductor else "torch.export",
    }
    if ck.kind == "potential":
        meta.update(cutoff=float(ck.hparams.get("cutoff", program.model.cutoff)),
                    elements=[int(z) for z in program.model.elements])
    else:
        spec = ck.featurizer().spec
        meta.update(global_graph=dict(spec.global_graph), features=spec.to_dict(),
                    delta_time=float(ck.dataset.delta_time), frame_dt=float(ck.dataset.frame_dt),
                    delta_frames=int(ck.dataset.delta_frames), uses_local_graph=bool(
                        getattr(program.model, "uses_local_graph", False)),
                    input_speed_limit=program.speed_limit if math.isfinite(program.speed_limit) else None)
    source = (Path(__file__).with_name("export_neighbors.py")).read_text(encoding="utf-8")
    extra = {META_FILE: json.dumps(meta, indent=1, ensure_ascii=False), NEIGHBORS_FILE: source}
    if aot_inductor:
        worst = max(worst, _write_aot_inductor(ep, out, extra, program, checks, ck, tol, overwrite))
    else:
        with atomic_file(out, overwrite=overwrite) as fh:
            torch.export.save(ep, fh, extra_files=extra)
    return ExportResult(out, ck.kind, ck.model_name, dtype_name(dt), time.perf_counter() - t0, worst, meta)


def read_extras(path: str | os.PathLike) -> dict[str, str]:
    """The extra files (``mdsurrogate.json``, ``neighbors.py``) of a torch.export or AOTInductor archive, read as
    the zip archive both are (``<root>/extra/<name>``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return {n.split("/extra/", 1)[1]: z.read(n).decode("utf-8") for n in z.namelist()
                    if "/extra/" in n and not n.endswith("/")}
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path} is not a loadable torch.export archive ({exc.__class__.__name__})") from None


def load_exported(path: str | os.PathLike) -> tuple[nn.Module, dict, str]:
    """(callable program, metadata dict, source of ``neighbors.py``) of an exported archive, with torch only.

    The same lines work without mdsurrogate: ``extra = {"mdsurrogate.json": "", "neighbors.py": ""}``,
    ``program = torch.export.load(path, extra_files=extra).module()``, ``meta = json.loads(extra[...])``; an
    AOTInductor package loads with ``torch._inductor.aoti_load_package(path)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"exported model {path} does not exist")
    extra = read_extras(path)
    try:
        meta = json.loads(extra.get(META_FILE, ""))
    except json.JSONDecodeError:
        meta = {}
    if meta.get("format") != FORMAT:
        raise ExportError(f"{path} is not an archive mdsurrogate exported (no {META_FILE})")
    try:
        if meta.get("package") == "aot_inductor":
            from torch._inductor import aoti_load_package

            program = aoti_load_package(str(path))
        else:
            program = torch.export.load(path).module()
    except Exception as exc:  # noqa: BLE001 - any unreadable archive is bad input here
        raise ExportError(f"{path} is not a loadable torch.export archive ({exc.__class__.__name__})") from None
    return program, meta, extra.get(NEIGHBORS_FILE, "")

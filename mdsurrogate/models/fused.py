"""The fused, chunked edge pipeline shared by the message-passing layers (EGCL, EMMP, GMN, MPNN, the velocity
readout).

Every one of those layers computes, for each edge e = (i ← j) of an edge set,

    (s_e, B_e) = geometry(z_i, z_j)                        invariant scalars [S_g] and a vector basis [3, q]
    p_e  = W₁ [h_i, h_j, s_e, a_e] + b₁ = P_i + Q_j + W_s [s_e, a_e] + b₁,  P = h W_iᵀ, Q = h W_jᵀ [N, H]
    m_e  = σ(W₂ σ(p_e) + b₂)                               message [H]                      (optional)
    c_e  = W₄ σ(W₃ u_e + b₃) + b₄,  u_e = m_e (or σ(p_e))   coefficients [q·o]; the W₃ layer is optional
    V_e  = clamp(B_e C_e, ±clip),   C_e = c_e as [q, o]     vector message [3, o]            (optional)

and reduces  M_i = Σ_{e→i} w_e m_e  and  U_i = Σ_{e→i} w_e V_e  (w_e the optional smooth-cutoff weight,
``GraphBatch.edge_weight``). The reference implementation materialises every [E, H] intermediate and lets
autograd store them; ``edge_pipeline`` walks the edges in chunks of ``chunk_size`` (a cache-sized block; edges
are sorted by receiver, so a chunk touches few receivers) through reused chunk buffers, and is a custom
``torch.autograd.Function`` with a hand-written backward. Without gradients (rollouts) no [E, H] tensor exists
at any time. With gradients, the chunks' activations are kept for the backward while they total less than
``STORE_LIMIT_BYTES`` (faster) and the backward recomputes each chunk beyond it (bounded memory). The narrow
geometry (a few values per edge) has a hand-written vector-Jacobian product (or autograd on the chunk).

The arithmetic is that of the reference layers up to the summation order of the reductions: tests compare both
paths in float64 (forward and gradients). ``edge_impl()`` selects the path: ``"fused"`` (default) or
``"reference"``, set by ``MDSURROGATE_EDGE_IMPL``, ``set_edge_impl`` or the ``use_edge_impl`` context manager.
The fused path supports σ = SiLU (the default activation of every model); layers with another activation use
the reference path, and so does code traced by ``torch.compile`` or run under autocast (``fused_active``). It is
first-order only (``once_differentiable``): a loss on forces = −∂E/∂x needs the reference path (the learned
potentials do not use these layers).

Shapes: N nodes (receivers and senders index the same node arrays), E edges (``edge_index[0]`` = i receiver,
``edge_index[1]`` = j sender), H hidden width, S = S_g + A scalar inputs, q basis vectors, o output channels.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

IMPLS = ("fused", "reference")
_impl = os.environ.get("MDSURROGATE_EDGE_IMPL", "fused")
if _impl not in IMPLS:
    raise ValueError(f"MDSURROGATE_EDGE_IMPL must be one of {', '.join(IMPLS)}, not {_impl!r}")

# Tunables (environment overrides in brackets). Chunks of a few thousand edges keep the [C, H] blocks in L2/L3;
# activations are kept for the backward up to STORE_LIMIT_BYTES per call (recomputing a chunk costs two more GEMMs
# and three more SiLUs per edge, about a third of a training step's edge work) and recomputed beyond it, so that
# memory stays bounded on large graphs. Measured on a 2-core EPYC (busy): chunks of 2048 to 8192 edges within
# noise of each other; keeping activations 1.2-1.3x faster per training step than recomputing them.
CHUNK_SIZE = int(os.environ.get("MDSURROGATE_CHUNK_SIZE", 4096))  # [MDSURROGATE_CHUNK_SIZE]
STORE_LIMIT_BYTES = int(float(os.environ.get("MDSURROGATE_STORE_LIMIT_MB", 1024)) * 2**20)  # [.._STORE_LIMIT_MB]
MIN_EDGES = 0  # edge sets with fewer edges take the reference path


def edge_impl() -> str:
    """The current edge-pipeline implementation: ``"fused"`` or ``"reference"``."""
    return _impl


def set_edge_impl(name: str) -> None:
    global _impl
    if name not in IMPLS:
        raise ValueError(f"edge implementation must be one of {', '.join(IMPLS)}, not {name!r}")
    _impl = name


@contextmanager
def use_edge_impl(name: str) -> Iterator[None]:
    """``with use_edge_impl("reference"): ...`` runs the layers with that implementation, then restores it."""
    old = _impl
    set_edge_impl(name)
    try:
        yield
    finally:
        set_edge_impl(old)


def _autocast_on() -> bool:
    return torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu")


def fused_active() -> bool:
    """True when the hand-written fused kernels should run: the implementation is ``"fused"``, Dynamo is not
    tracing (``torch.compile`` fuses the reference operations itself) and autocast is off (under autocast the
    reference operations run in the autocast dtype; see ``accel``)."""
    return _impl == "fused" and not torch.compiler.is_compiling() and not _autocast_on()


def fused_enabled(act: str, n_edges: int | None = None) -> bool:
    """True when a layer should take the fused path: ``fused_active``, σ = SiLU (the one it implements) and at
    least ``MIN_EDGES`` edges (when ``n_edges`` is given)."""
    return act == "silu" and (n_edges is None or n_edges >= MIN_EDGES) and fused_active()


# ------------------------------------------------------------------------------------------------------------
# Geometry: per-edge invariants and vector basis from the gathered node states of a chunk
# ------------------------------------------------------------------------------------------------------------
# The narrow per-edge quantities (node states, scalars, basis vectors, vector messages) are kept component-major,
# [components, C]: every element-wise operation then runs along the long, contiguous edge dimension (several
# times faster on CPU than on rows of 3 or 9 values), and the transposed GEMM operands cost nothing.
class Geometry:
    """Per-edge scalars and vector basis of a chunk, component-major:
    ``(z_i [G, C], z_j [G, C]) → (s [S_g, C], B [q, 3, C])`` (B[k] the k-th basis vector of every edge).

    ``vjp`` maps the gradients of (s, B) back to (z_i, z_j); the default differentiates ``__call__`` with
    autograd on the chunk, so a new geometry only needs ``__call__``.
    """

    n_scalars: int = 0
    n_basis: int = 0  # q; 0 for a geometry without vectors

    def __call__(self, zi: Tensor, zj: Tensor) -> tuple[Tensor, Tensor | None]:  # pragma: no cover
        raise NotImplementedError

    def vjp(self, zi: Tensor, zj: Tensor, gs: Tensor, gb: Tensor | None) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            zi = zi.detach().requires_grad_()
            zj = zj.detach().requires_grad_()
            s, b = self(zi, zj)
            outs, grads = [s], [gs]
            if b is not None and gb is not None:
                outs.append(b)
                grads.append(gb)
            gi, gj = torch.autograd.grad(outs, (zi, zj), grads, allow_unused=True)
        return (torch.zeros_like(zi) if gi is None else gi), (torch.zeros_like(zj) if gj is None else gj)


class RelativePosition(Geometry):
    """EGNN's geometry on positions (z = xᵀ [3, N]): s = ‖x_i − x_j‖² [1, C], B = x_i − x_j [1, 3, C]."""

    n_scalars, n_basis = 1, 1

    def __call__(self, zi, zj):
        rel = zi - zj
        return (rel * rel).sum(0, keepdim=True), rel.unsqueeze(0)

    def vjp(self, zi, zj, gs, gb):
        g = 2.0 * (zi - zj) * gs
        if gb is not None:
            g = g + gb[0]
        return g, -g


def _gram(a: Tensor, b: Tensor) -> Tensor:
    """[p, 3, C], [r, 3, C] → [p, r, C]: entry (k, l) = a_k · b_l for every edge."""
    return (a.unsqueeze(1) * b.unsqueeze(0)).sum(2)


def _normalise(g: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(Ĝ, r): Ĝ = G r with r = 1/sqrt(‖G‖²_F + eps) per edge; G [p, q, C], r [C]."""
    r = torch.rsqrt(g.square().sum((0, 1)) + eps)
    return g * r, r


def _normalise_vjp(g: Tensor, r: Tensor, g_hat: Tensor) -> Tensor:
    """∂L/∂G from ∂L/∂Ĝ for Ĝ = G r (``_normalise``): g_hat r − G r³ Σ(g_hat ⊙ G)."""
    return g_hat * r - g * (r * r * r * (g_hat * g).sum((0, 1)))


class DifferenceGram(Geometry):
    """EMMP's "difference" geometry on Z = [x, V] ∈ R^{3×m} (z = Z flattened, transposed: [3·m, N]):
    B = [x_i − x_j, V_i, V_j] [q = 2m−1, 3, C], s = [normalised Gram BᵀB (q² entries, row-major), ‖x_i − x_j‖²]
    (``eghn.normalised_gram``, whose ε is ``eps``); ``vjp`` is its hand-written derivative."""

    def __init__(self, channels: int, eps: float):
        self.m, self.eps = channels, eps
        self.n_basis = 2 * channels - 1
        self.n_scalars = self.n_basis**2 + 1

    def basis(self, zi, zj):
        zi, zj = zi.view(3, self.m, -1), zj.view(3, self.m, -1)
        return torch.cat([(zi[:, 0] - zj[:, 0]).unsqueeze(0), zi[:, 1:].transpose(0, 1),
                          zj[:, 1:].transpose(0, 1)], dim=0)  # [q, 3, C]

    def __call__(self, zi, zj):
        q = self.n_basis
        basis = self.basis(zi, zj)
        g = _gram(basis, basis)  # BᵀB [q, q, C]
        g_hat, _ = _normalise(g, self.eps)
        return torch.cat([g_hat.view(q * q, -1), g[0, :1]], dim=0), basis  # d2 = G₀₀

    def vjp(self, zi, zj, gs, gb):
        m, q = self.m, self.n_basis
        basis = self.basis(zi, zj)
        g = _gram(basis, basis)
        _, r = _normalise(g, self.eps)
        g_g = _normalise_vjp(g, r, gs[: q * q].view(q, q, -1))
        g_g[0, 0] += gs[q * q]  # d2 = G₀₀
        g_basis = _gram_vjp_b(g_g + g_g.transpose(0, 1), basis)  # ∂(BᵀB)/∂B
        if gb is not None:
            g_basis = g_basis + gb
        g_zi = torch.cat([g_basis[:1], g_basis[1:m]], dim=0).transpose(0, 1).reshape(3 * m, -1)
        g_zj = torch.cat([-g_basis[:1], g_basis[m:]], dim=0).transpose(0, 1).reshape(3 * m, -1)
        return g_zi, g_zj


def _gram_vjp_b(g_g: Tensor, a: Tensor) -> Tensor:
    """Σ_l g_g[k, l] a_l: [p, r, C], [r, 3, C] → [p, 3, C]."""
    return (g_g.unsqueeze(2) * a.unsqueeze(0)).sum(1)


class CrossGram(Geometry):
    """The official EGHN pooling layer's geometry (every column translation invariant; z = Z flattened,
    transposed: [3·m, N]): B = Z_j [m, 3, C], s = normalised Z_jᵀ Z_i (m² entries, row-major)."""

    def __init__(self, channels: int, eps: float):
        self.m, self.eps = channels, eps
        self.n_basis = channels
        self.n_scalars = channels**2

    def __call__(self, zi, zj):
        m = self.m
        zi, zj = zi.view(3, m, -1).transpose(0, 1), zj.view(3, m, -1).transpose(0, 1)  # [m, 3, C]
        g_hat, _ = _normalise(_gram(zj, zi), self.eps)
        return g_hat.reshape(m * m, -1), zj

    def vjp(self, zi, zj, gs, gb):
        m = self.m
        zi, zj = zi.view(3, m, -1).transpose(0, 1), zj.view(3, m, -1).transpose(0, 1)
        g = _gram(zj, zi)  # G[a, b] = z_j,a · z_i,b
        _, r = _normalise(g, self.eps)
        g_g = _normalise_vjp(g, r, gs.view(m, m, -1))
        g_zi = _gram_vjp_b(g_g.transpose(0, 1), zj)  # Σ_a g[a, b] z_j,a
        g_zj = _gram_vjp_b(g_g, zi)
        if gb is not None:
            g_zj = g_zj + gb
        return g_zi.transpose(0, 1).reshape(3 * m, -1), g_zj.transpose(0, 1).reshape(3 * m, -1)


# ------------------------------------------------------------------------------------------------------------
# The edge network's weights
# ------------------------------------------------------------------------------------------------------------
@dataclass
class EdgeNet:
    """Weights of the edge MLP (the layer's parameters themselves; see the module docstring).

    w1 [H, 2F + S], b1 [H]: the first layer on [h_i, h_j, s_e] (``PairLinear``): W_i = w1[:, :F],
        W_j = w1[:, F:2F], W_s = w1[:, 2F:].
    w2 [H, H], b2 [H]: the message layer, or None (no message: u = σ(p)).
    w3 [H, H], b3 [H]: the hidden layer of the coefficient head, or None (c = W₄ u + b₄).
    w4 [q·o, H], b4 [q·o] or None: the head's last layer, or w4 None (no vector message).
    """

    w1: Tensor
    b1: Tensor
    w2: Tensor | None = None
    b2: Tensor | None = None
    w3: Tensor | None = None
    b3: Tensor | None = None
    w4: Tensor | None = None
    b4: Tensor | None = None


@dataclass
class _Config:
    geometry: Geometry | None
    n_out: int
    clip: float | None
    num_nodes: int
    chunk: int
    store: bool


def _silu_grad(g: Tensor, z: Tensor) -> Tensor:
    return torch.ops.aten.silu_backward(g, z)


def _weighted(t: Tensor, w: Tensor | None) -> Tensor:
    """Rows of t [C, …] times w [C] (t itself when w is None)."""
    return t if w is None else t * w.view((-1,) + (1,) * (t.dim() - 1))


def _chunks(n_edges: int, chunk: int):
    for e0 in range(0, n_edges, chunk):
        yield e0, min(n_edges, e0 + chunk)


_POOLS = threading.local()  # per-thread workspace buffers, kept between calls (see _Workspace)


def release_workspaces() -> None:
    """Free the chunk buffers kept between calls by this thread (a few MiB per hidden width)."""
    _POOLS.__dict__.clear()


class _Workspace:
    """Chunk-sized scratch buffers for the ``out=`` operations of the chunks of a pipeline call.

    A fresh [C, H] tensor per operation and chunk would come from freshly mapped pages each time (glibc returns
    freed blocks of this size to the system), and its first touch page-faults; the buffers are therefore kept in
    a per-thread pool between chunks and calls (``release_workspaces`` frees them). ``get(name, n, width)`` → a
    [n, width] view of buffer ``name`` of this workspace's ``role`` (the forward's and the backward's buffers are
    distinct); with ``rows`` None (activations kept for the backward) every call allocates.
    """

    def __init__(self, rows: int | None, like: Tensor, role: str = "fw"):
        self.rows, self.like, self.role = rows, like, role
        self.pool = _POOLS.__dict__.setdefault("bufs", {})

    def get(self, name: str, n: int, width: int) -> Tensor:
        if self.rows is None:
            return self.like.new_empty(n, width)
        key = (self.role, name, width, self.like.dtype, self.like.device)
        b = self.pool.get(key)
        if b is None or b.shape[0] < self.rows:
            b = self.pool[key] = self.like.new_empty(self.rows, width)
        return b[:n]


def _silu(x: Tensor, out: Tensor) -> Tensor:
    return torch._C._nn.silu(x, out=out)


def _silu_grad_out(g: Tensor, z: Tensor, out: Tensor) -> Tensor:
    return torch.ops.aten.silu_backward.grad_input(g, z, grad_input=out)


def _chunk_forward(cfg: _Config, i, j, nodes_t, pi, pj, attr_t, net: EdgeNet, w_s, ws: _Workspace):
    """The forward of one chunk: the activations (a dict) needed by the reduction and the backward.

    Row-major [C, H]: pre, a1, z2, m, z3, u3. Component-major: zi, zj [G, C], s [S, C], basis [q, 3, C],
    c [q·o, C], vec [3·o, C].
    """
    act = {}
    n, H = i.shape[0], pi.shape[1]
    if cfg.geometry is not None:
        zi, zj = nodes_t.index_select(1, i), nodes_t.index_select(1, j)
        s_geo, basis = cfg.geometry(zi, zj)
        act.update(zi=zi, zj=zj, basis=basis)
        s = s_geo if attr_t is None else torch.cat([s_geo, attr_t], dim=0)
    else:
        s = attr_t
    act["s"] = s
    pre = torch.index_select(pi, 0, i, out=ws.get("pre", n, H))  # P_i + b₁ (the bias is folded into P)
    pre += torch.index_select(pj, 0, j, out=ws.get("tmp", n, H))
    if s is not None and s.shape[0]:
        pre.addmm_(s.t(), w_s.t())
    a1 = _silu(pre, ws.get("a1", n, H))
    act.update(pre=pre, a1=a1)
    u = a1
    if net.w2 is not None:
        z2 = torch.addmm(net.b2, a1, net.w2.t(), out=ws.get("z2", n, H))
        u = _silu(z2, ws.get("m", n, H))
        act.update(z2=z2, m=u)
    if net.w4 is not None:
        u3 = u
        if net.w3 is not None:
            z3 = torch.addmm(net.b3, u, net.w3.t(), out=ws.get("z3", n, H))
            u3 = _silu(z3, ws.get("u3", n, H))
            act["z3"] = z3
        act["u3"] = u3
        # c = W₄ u (+ b₄), computed transposed: [q·o, H] @ [H, C] is twice as fast as the skinny [C, H] @ [H, q·o]
        c = net.w4 @ u3.t() if net.b4 is None else torch.addmm(net.b4.unsqueeze(1), net.w4, u3.t())
        basis = act["basis"]
        q, o = basis.shape[0], cfg.n_out
        vec = (basis.unsqueeze(2) * c.view(q, 1, o, -1)).sum(0)  # V = B C: Σ_k B_k c_k,o  [3, o, C]
        act.update(c=c, vec=vec.view(3 * o, -1))
    return act


def _run_forward(cfg: _Config, edge_index, nodes_t, pi, pj, attr_t, weight, net: EdgeNet, w_s, keep):
    n, E = cfg.num_nodes, edge_index.shape[1]
    msum = pi.new_zeros(n, net.w2.shape[0]) if net.w2 is not None else pi.new_zeros(n, 0)
    vsum_t = pi.new_zeros(3 * cfg.n_out, n) if net.w4 is not None else pi.new_zeros(0, n)
    ws = _Workspace(None if keep is not None else min(cfg.chunk, E), pi)
    for e0, e1 in _chunks(E, cfg.chunk):
        i, j = edge_index[0, e0:e1], edge_index[1, e0:e1]
        w = None if weight is None else weight[e0:e1]
        act = _chunk_forward(cfg, i, j, nodes_t, pi, pj, None if attr_t is None else attr_t[:, e0:e1], net, w_s,
                             ws)
        if net.w2 is not None:
            m = act["m"]
            msum.index_add_(0, i, m if w is None else torch.mul(m, w.unsqueeze(1), out=ws.get("tmp", *m.shape)))
        if net.w4 is not None:
            vec = act["vec"]
            if cfg.clip is not None:
                vec = vec.clamp(-cfg.clip, cfg.clip)
            vsum_t.index_add_(1, i, vec if w is None else vec * w)
        if keep is not None:
            keep.append(act)
    return msum, vsum_t.t()


class _EdgePipeline(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg, edge_index, h, nodes, attr, weight, w1, b1, w2, b2, w3, b3, w4, b4):
        net = EdgeNet(w1, b1, w2, b2, w3, b3, w4, b4)
        f = h.shape[1]
        # P + b₁ and Q [N, H], contiguous (gathers from, and scatters into, strided views are several times
        # slower); the bias once per node, not per edge
        pi, pj, w_s = torch.addmm(b1, h, w1[:, :f].t()), h @ w1[:, f : 2 * f].t(), w1[:, 2 * f :]
        nodes_t = None if nodes is None else nodes.t().contiguous()  # [G, N]
        attr_t = None if attr is None else attr.t().contiguous()  # [A, E]
        keep = [] if cfg.store else None
        msum, vsum = _run_forward(cfg, edge_index, nodes_t, pi, pj, attr_t, weight, net, w_s, keep)
        ctx.cfg, ctx.keep = cfg, keep
        ctx.save_for_backward(edge_index, h, nodes_t, attr_t, weight, w1, b1, w2, b2, w3, b3, w4, b4, pi, pj)
        ctx.set_materialize_grads(False)
        return msum, vsum

    @staticmethod
    @once_differentiable
    def backward(ctx, g_msum, g_vsum):
        cfg: _Config = ctx.cfg
        edge_index, h, nodes_t, attr_t, weight, w1, b1, w2, b2, w3, b3, w4, b4, pi, pj = ctx.saved_tensors
        net = EdgeNet(w1, b1, w2, b2, w3, b3, w4, b4)
        need = ctx.needs_input_grad  # (cfg, edge_index, h, nodes, attr, weight, w1, b1, w2, b2, w3, b3, w4, b4)
        f, H = h.shape[1], w1.shape[0]
        w_s = w1[:, 2 * f :]
        if w2 is None:
            g_msum = None
        g_vsum_t = g_vsum.t().contiguous() if (w4 is not None and g_vsum is not None) else None  # [3·o, N]
        E = edge_index.shape[1]
        o = cfg.n_out
        n_geo = cfg.geometry.n_scalars if cfg.geometry is not None else 0

        def zeros(t, flag):
            return torch.zeros_like(t) if (t is not None and flag) else None

        g_proj = need[2] or need[6]  # ∂L/∂P and ∂L/∂Q are needed (for h or w1)
        g_pi, g_pj = (torch.zeros_like(pi), torch.zeros_like(pj)) if g_proj else (None, None)
        g_nodes_t, g_attr_t, g_weight = zeros(nodes_t, need[3]), zeros(attr_t, need[4]), zeros(weight, need[5])
        g_w1, g_b1, g_w2, g_b2 = zeros(w1, need[6]), zeros(b1, need[7]), zeros(w2, need[8]), zeros(b2, need[9])
        g_w3, g_b3, g_w4, g_b4 = zeros(w3, need[10]), zeros(b3, need[11]), zeros(w4, need[12]), zeros(b4, need[13])
        g_ws = g_w1[:, 2 * f :] if g_w1 is not None else None
        need_s = g_ws is not None or g_attr_t is not None or (g_nodes_t is not None and n_geo > 0)
        fw = _Workspace(min(cfg.chunk, E), pi, "fw")  # the recomputed forward's buffers
        bw = _Workspace(min(cfg.chunk, E), pi, "bw")  # the backward's
        for k, (e0, e1) in enumerate(_chunks(E, cfg.chunk)):
            i, j = edge_index[0, e0:e1], edge_index[1, e0:e1]
            nc = e1 - e0
            w = None if weight is None else weight[e0:e1]
            if ctx.keep is not None:
                act = ctx.keep[k]
            else:
                a_t = None if attr_t is None else attr_t[:, e0:e1]
                act = _chunk_forward(cfg, i, j, nodes_t, pi, pj, a_t, net, w_s, fw)
            g_u = None  # gradient reaching u (m, or σ(p) without a message layer)
            g_basis = None
            if g_vsum_t is not None:
                gv = g_vsum_t.index_select(1, i)  # [3·o, C]
                vec = act["vec"]
                if g_weight is not None:
                    vc = vec if cfg.clip is None else vec.clamp(-cfg.clip, cfg.clip)
                    g_weight[e0:e1] += (gv * vc).sum(0)
                if w is not None:
                    gv = gv * w
                if cfg.clip is not None:
                    gv = gv * ((vec >= -cfg.clip) & (vec <= cfg.clip))
                basis, c, u3 = act["basis"], act["c"], act["u3"]
                q = basis.shape[0]
                gv3 = gv.view(1, 3, o, -1)
                g_c = (basis.unsqueeze(2) * gv3).sum(1).view(q * o, -1)  # Bᵀ g  [q·o, C]
                g_basis = (gv3 * c.view(q, 1, o, -1)).sum(2)  # g Cᵀ  [q, 3, C]
                if g_w4 is not None:
                    g_w4.addmm_(g_c, u3)
                if g_b4 is not None:
                    g_b4 += g_c.sum(1)
                g_u3 = torch.mm(g_c.t(), w4, out=bw.get("a", nc, H))  # [C, H]
                if w3 is not None:
                    g_z3 = _silu_grad_out(g_u3, act["z3"], bw.get("b", nc, H))
                    if g_w3 is not None:
                        g_w3.addmm_(g_z3.t(), act["m"] if w2 is not None else act["a1"])
                    if g_b3 is not None:
                        g_b3 += g_z3.sum(0)
                    g_u = torch.mm(g_z3, w3, out=bw.get("a", nc, H))
                else:
                    g_u = g_u3
            if w2 is not None:
                g_m = g_u
                if g_msum is not None:
                    gm = torch.index_select(g_msum, 0, i, out=bw.get("b", nc, H))
                    if g_weight is not None:
                        g_weight[e0:e1] += (gm * act["m"]).sum(1)
                    if w is not None:
                        gm *= w.unsqueeze(1)
                    g_m = gm if g_m is None else g_m.add_(gm)
                if g_m is None:
                    continue
                g_z2 = _silu_grad_out(g_m, act["z2"], bw.get("c", nc, H))
                if g_w2 is not None:
                    g_w2.addmm_(g_z2.t(), act["a1"])
                if g_b2 is not None:
                    g_b2 += g_z2.sum(0)
                g_a1 = torch.mm(g_z2, w2, out=bw.get("a", nc, H))
            else:
                if g_u is None:
                    continue
                g_a1 = g_u
            g_pre = _silu_grad_out(g_a1, act["pre"], bw.get("b", nc, H))
            if g_proj:
                g_pi.index_add_(0, i, g_pre)
                g_pj.index_add_(0, j, g_pre)
            elif g_b1 is not None:
                g_b1 += g_pre.sum(0)
            s = act["s"]
            g_s = None
            if s is not None and s.shape[0]:
                if g_ws is not None:  # ∂L/∂W_s += g_preᵀ s, as (s g_pre)ᵀ: the [S, C] @ [C, H] form is ~15x faster
                    g_ws += torch.mm(s, g_pre).t()
                if need_s:
                    g_s = torch.mm(w_s.t(), g_pre.t())  # [S, C], component-major like s
            if g_attr_t is not None and g_s is not None:
                g_attr_t[:, e0:e1] = g_s[n_geo:]
            if g_nodes_t is not None and cfg.geometry is not None:
                gs_geo = g_s[:n_geo] if g_s is not None else torch.zeros_like(s[:n_geo])
                g_zi, g_zj = cfg.geometry.vjp(act["zi"], act["zj"], gs_geo, g_basis)
                g_nodes_t.index_add_(1, i, g_zi)
                g_nodes_t.index_add_(1, j, g_zj)
        ctx.keep = None
        g_h = None
        if g_proj and g_b1 is not None:
            g_b1 = g_pi.sum(0)  # every edge's ∂L/∂p went through P + b₁
        if g_proj:
            if need[2]:
                g_h = torch.addmm(g_pi @ w1[:, :f], g_pj, w1[:, f : 2 * f])  # [N, F]
            if g_w1 is not None:
                g_w1[:, :f] = g_pi.t() @ h
                g_w1[:, f : 2 * f] = g_pj.t() @ h
        g_nodes = None if g_nodes_t is None else g_nodes_t.t()
        g_attr = None if g_attr_t is None else g_attr_t.t()
        return (None, None, g_h, g_nodes, g_attr, g_weight, g_w1, g_b1, g_w2, g_b2, g_w3, g_b3, g_w4, g_b4)


def edge_pipeline(net: EdgeNet, edge_index: Tensor, h: Tensor, *, nodes: Tensor | None = None,
                  geometry: Geometry | None = None, attr: Tensor | None = None, edge_weight: Tensor | None = None,
                  n_out: int = 1, clip: float | None = None, chunk_size: int | None = None,
                  store_limit_bytes: int | None = None) -> tuple[Tensor | None, Tensor | None]:
    """Σ_{e→i} w_e m_e and Σ_{e→i} w_e V_e of the module docstring, chunked, with a recomputing backward.

    Args:
        net: the edge MLP's weights. edge_index [2, E] (receiver first). h [N, F]: node scalars (P = h W_iᵀ and
            Q = h W_jᵀ are computed once per node, inside).
        nodes [N, G] and geometry: the node states the geometry reads (None: no geometry, s = attr only).
        attr [E, A] edge scalars (appended after the geometry's scalars), or None.
        edge_weight [E] smooth-cutoff weights w_e, or None (all 1).
        n_out: o, output channels of the vector message (``net.w4`` has q·o rows).
        clip: clamp of every entry of V_e to ±clip (before the weight), or None.
        chunk_size: edges per chunk (default ``CHUNK_SIZE``). store_limit_bytes: keep the activations for the
            backward when they need less than this (default ``STORE_LIMIT_BYTES``), else recompute.
    Returns: (M [N, H] or None without a message layer, U [N, 3·o] or None without a vector head; U's columns
        are (spatial component d, channel) → d·o + channel).
    """
    H = net.w1.shape[0]
    E = edge_index.shape[1]
    if net.w1.shape[1] < 2 * h.shape[1]:
        raise ValueError(f"w1 has {net.w1.shape[1]} columns, fewer than 2F = {2 * h.shape[1]}")
    if geometry is not None and nodes is None:
        raise ValueError("a geometry needs the node states it reads")
    chunk = max(1, int(chunk_size or CHUNK_SIZE))
    limit = STORE_LIMIT_BYTES if store_limit_bytes is None else store_limit_bytes
    n_blocks = 2 + 2 * (net.w2 is not None) + 2 * (net.w3 is not None)  # [E, H] activations kept per edge
    store = torch.is_grad_enabled() and E * H * n_blocks * h.element_size() <= limit
    cfg = _Config(geometry, n_out, clip, h.shape[0], chunk, store)
    msum, vsum = _EdgePipeline.apply(cfg, edge_index, h, nodes, attr, edge_weight, net.w1, net.b1, net.w2, net.b2,
                                     net.w3, net.b3, net.w4, net.b4)
    return (msum if net.w2 is not None else None), (vsum if net.w4 is not None else None)


# ------------------------------------------------------------------------------------------------------------
# Chunked neighbour sums (e.g. (A S)_i = Σ_{j→i} w_ij S_j for EGHN's coarsened adjacency)
# ------------------------------------------------------------------------------------------------------------
class _NeighbourSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, edge_index, src, weight, num_nodes, chunk):
        out = src.new_zeros((num_nodes,) + src.shape[1:])
        for e0, e1 in _chunks(edge_index.shape[1], chunk):
            rows = src.index_select(0, edge_index[1, e0:e1])
            out.index_add_(0, edge_index[0, e0:e1], _weighted(rows, None if weight is None else weight[e0:e1]))
        ctx.save_for_backward(edge_index, src, weight)
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        edge_index, src, weight = ctx.saved_tensors
        need_src, need_w = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        g_src = torch.zeros_like(src) if need_src else None
        g_w = torch.zeros_like(weight) if (need_w and weight is not None) else None
        for e0, e1 in _chunks(edge_index.shape[1], ctx.chunk):
            i, j = edge_index[0, e0:e1], edge_index[1, e0:e1]
            g = g_out.index_select(0, i)
            if g_w is not None:
                g_w[e0:e1] = (g * src.index_select(0, j)).flatten(1).sum(-1)
            if g_src is not None:
                g_src.index_add_(0, j, _weighted(g, None if weight is None else weight[e0:e1]))
        return None, g_src, g_w, None, None


def neighbour_sum(src: Tensor, edge_index: Tensor, num_nodes: int, weight: Tensor | None = None,
                  chunk_size: int | None = None) -> Tensor:
    """(A src)_i = Σ_{e = (i ← j)} w_e src_j, chunked (no [E, …] tensor): src [N, …], edge_index [2, E],
    weight [E] or None → [num_nodes, …]. Differentiable in src and weight (first order)."""
    chunk = max(1, int(chunk_size or 4 * CHUNK_SIZE))
    return _NeighbourSum.apply(edge_index, src, weight, num_nodes, chunk)


# ------------------------------------------------------------------------------------------------------------
# Node MLPs: Linear → SiLU → Linear (→ SiLU) on concatenated inputs, several heads sharing one first matmul
# ------------------------------------------------------------------------------------------------------------
def _mlp_shape(seq) -> bool | None:
    """True/False (trailing SiLU or not) for Sequential(Linear, SiLU, Linear[, SiLU]), None for anything else."""
    from torch import nn

    if not isinstance(seq, nn.Sequential) or len(seq) not in (3, 4):
        return None
    if not (isinstance(seq[0], nn.Linear) and isinstance(seq[1], nn.SiLU) and isinstance(seq[2], nn.Linear)):
        return None
    if len(seq) == 4 and not isinstance(seq[3], nn.SiLU):
        return None
    return len(seq) == 4


class _MLPHeads(torch.autograd.Function):
    """out_k = [σ](W₂ₖ σ(W₁ₖ [x_1, …, x_n] + b₁ₖ) + b₂ₖ), the first layers of all heads in one matmul per input."""

    @staticmethod
    def forward(ctx, cfg, *tensors):
        n_in, n_heads, act_last = cfg
        xs, ws = tensors[:n_in], tensors[n_in:]
        w1 = torch.cat(ws[0:4 * n_heads:4], dim=0) if n_heads > 1 else ws[0]  # [ΣH, D]
        b1 = torch.cat(ws[1:4 * n_heads:4], dim=0) if n_heads > 1 else ws[1]
        z1, off = None, 0
        for x in xs:
            blk = w1[:, off : off + x.shape[1]]
            z1 = torch.addmm(b1, x, blk.t()) if z1 is None else z1.addmm_(x, blk.t())
            off += x.shape[1]
        a = F.silu(z1)
        outs, zs, r = [], [], 0
        for k in range(n_heads):
            w2, b2 = ws[4 * k + 2], ws[4 * k + 3]
            hk = w2.shape[1]
            z2 = torch.addmm(b2, a[:, r : r + hk], w2.t())
            zs.append(z2)
            outs.append(F.silu(z2) if act_last else z2)
            r += hk
        ctx.cfg = cfg
        ctx.save_for_backward(*xs, *ws, z1, a, *zs)
        ctx.set_materialize_grads(False)
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *g_outs):
        n_in, n_heads, act_last = ctx.cfg
        saved = ctx.saved_tensors
        xs, ws = saved[:n_in], saved[n_in : n_in + 4 * n_heads]
        z1, a, zs = saved[n_in + 4 * n_heads], saved[n_in + 4 * n_heads + 1], saved[n_in + 4 * n_heads + 2 :]
        need = ctx.needs_input_grad[1:]
        g_a = torch.zeros_like(a)
        g_ws: list = [None] * (4 * n_heads)
        r = 0
        for k in range(n_heads):
            w2 = ws[4 * k + 2]
            hk = w2.shape[1]
            g = g_outs[k]
            if g is not None:
                if act_last:
                    g = _silu_grad(g, zs[k])
                if need[n_in + 4 * k + 2]:
                    g_ws[4 * k + 2] = g.t() @ a[:, r : r + hk]
                if need[n_in + 4 * k + 3]:
                    g_ws[4 * k + 3] = g.sum(0)
                g_a[:, r : r + hk] = g @ w2
            r += hk
        g_z1 = _silu_grad(g_a, z1)
        w1 = torch.cat(ws[0:4 * n_heads:4], dim=0) if n_heads > 1 else ws[0]
        r = 0
        for k in range(n_heads):
            hk = ws[4 * k].shape[0]
            gk = g_z1[:, r : r + hk]
            if need[n_in + 4 * k]:
                g_w = torch.empty_like(ws[4 * k])
                off = 0
                for x in xs:
                    g_w[:, off : off + x.shape[1]] = gk.t() @ x
                    off += x.shape[1]
                g_ws[4 * k] = g_w
            if need[n_in + 4 * k + 1]:
                g_ws[4 * k + 1] = gk.sum(0)
            r += hk
        g_xs, off = [], 0
        for m, x in enumerate(xs):
            g_xs.append(g_z1 @ w1[:, off : off + x.shape[1]] if need[m] else None)
            off += x.shape[1]
        return (None, *g_xs, *g_ws)


def fused_mlp(seqs, *inputs: Tensor) -> list[Tensor]:
    """[seq(cat(inputs)) for seq in seqs] for MLPs ``Sequential(Linear, SiLU, Linear[, SiLU])`` that share their
    inputs: the first layers of all heads as one matmul per input (no concatenation of the inputs, no
    [N, ΣH] autograd bookkeeping), a hand-written backward. Falls back to the modules themselves when the edge
    implementation is ``"reference"`` or a module has another form. inputs [N, D_k] → list of [N, out_k]."""
    kinds = {_mlp_shape(s) for s in seqs}
    if not fused_active() or None in kinds or len(kinds) != 1:
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        return [s(x) for s in seqs]
    ws = []
    for s in seqs:
        ws += [s[0].weight, s[0].bias, s[2].weight, s[2].bias]
    if any(w is None for w in ws):
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        return [s(x) for s in seqs]
    return list(_MLPHeads.apply((len(inputs), len(seqs), kinds.pop()), *inputs, *ws))

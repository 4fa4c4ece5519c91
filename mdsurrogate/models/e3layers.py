"""Steerable (e3nn) building blocks shared by SEGNN and TFN.

Features are e3nn irreps arrays: a tensor [*, irreps.dim] whose blocks ``mul x (l, p)`` are laid out channel-major
([*, mul, 2l+1] flattened), with the Cartesian basis (x, y, z) for ``1o`` (e3nn's convention), so a position or a
velocity is a ``1o`` feature as it is. Clebsch–Gordan coefficients are e3nn's ``o3.wigner_3j`` with e3nn's
"component" normalisation (× √(2l_out+1)); attributes are spherical harmonics Y(r̂) ("component" normalisation:
each component of unit size on average, Y⁰ = 1; SEGNN uses e3nn's "integral" one, Y⁰ = 1/√(4π), as its code).

Two tensor products, both evaluated with a few dense batched operations (no loop over nodes or edges):

``AttrTensorProduct``  y = Σ_paths W_path · (x ⊗ a)_path + b: e3nn's ``FullyConnectedTensorProduct(irreps_in,
    irreps_attr, irreps_out)`` with shared weights, for an attribute ``a`` holding one copy of each irrep (spherical
    harmonics). With one attribute channel, CG coupling and channel mixing commute:
    Σ_u W_uw CG(x_u, a) = CG(Σ_u W_uw x_u, a), so the layer first mixes channels per input irrep type
    (one matmul per type: ``mix``) and then couples the mixed channels with ``a`` (``couple``). When the input is a
    concatenation of node features gathered on edges, [h_i, h_j, s_ij], ``mix`` runs once per node and the result
    is gathered, which is what makes SEGNN's messages cheap (the same trick as ``layers.PairLinear``). Called
    directly (``forward``), it couples the l ⊗ l → 0e groups first instead (a dot product per input channel,
    then one matmul), which is cheaper when the input is already per edge.
``ChannelwiseTensorProduct``  TFN's convolution: per edge, every channel u of every path is coupled with the
    filter Y(r̂_ij) and scaled by its own radial weight R(‖r_ij‖)_{path,u} (e3nn's "uvu" mode, per-edge weights).

Shapes: ``*`` any leading batch shape (nodes [ΣN] or edges [E]).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.math import normalize2mom
from e3nn.nn import Gate
from torch import Tensor, nn

from ..data.graph import GraphBatch
from .layers import activation
from .scatter import scatter_mean, weighted_scatter


def sh_irreps(lmax: int) -> o3.Irreps:
    """Spherical-harmonics irreps 1x0e + 1x1o + 1x2e + … up to ``lmax`` (what Y^l of a vector transforms as)."""
    return o3.Irreps.spherical_harmonics(lmax)


def sh_type_irreps(mul: int, lmax: int) -> o3.Irreps:
    """``mul`` copies of each spherical-harmonics irrep: mul x 0e + mul x 1o + … up to ``lmax``."""
    return o3.Irreps([(mul, ir) for _, ir in sh_irreps(lmax)])


def _paths(irreps_in: o3.Irreps, irreps_attr: o3.Irreps, irreps_out: o3.Irreps):
    """(input type, attribute index, output index) triples allowed by the CG selection rules and parity."""
    types = sorted({ir for _, ir in irreps_in})
    return [(t, i2, io) for t in types for i2, (_, ir2) in enumerate(irreps_attr)
            for io, (_, ir_o) in enumerate(irreps_out) if ir_o in t * ir2]


def weight_balanced_irreps(hidden: int, lmax_hidden: int, lmax_attr: int) -> o3.Irreps:
    """SEGNN's "weight balanced" hidden irreps (Brandstetter et al. 2022): the fewest n copies of each
    spherical-harmonics irrep up to ``lmax_hidden`` such that the tensor product hidden ⊗ Y(lmax_attr) → hidden has
    at least as many weights as a ``hidden × hidden`` linear layer (64 → 32x0e+32x1o for lmax 1, 1)."""
    attr = sh_irreps(lmax_attr)
    n = 1
    while True:
        irreps = sh_type_irreps(n, lmax_hidden)
        if len(_paths(irreps, attr, irreps)) * n * n >= hidden * hidden:  # every path has n × n weights
            return irreps
        n += 1


class _Coupler:
    """CG coupling of channels z [*, C, 2l₁+1] with one attribute irrep a [*, 2l₂+1] into [*, C, 2l_o+1].

    The cases that cover most paths are one broadcast product: x ⊗ Y⁰ (``attr_scalar``; a constant factor when the
    attribute's 0e component is a known constant, nothing when that factor is 1), scalar ⊗ Y^l (``in_scalar``) and
    dot products to l_o = 0
    (``dot``); the rest contract with M = Σ_j a_j C_{i j ·} [*, 2l₁+1, 2l_o+1].
    """

    def __init__(self, l1: int, l2: int, lo: int, cg: Tensor, scalar_attr: float | None = None):
        self.kind, self.scale = "general", 1.0
        d1, d2, _ = cg.shape
        if l2 == 0 and torch.allclose(cg[:, 0, :], cg[0, 0, 0] * torch.eye(d1, dtype=cg.dtype)):
            self.kind, self.scale = "attr_scalar", float(cg[0, 0, 0])
            if scalar_attr is not None:  # a known constant: no need to read the attribute
                self.scale *= scalar_attr
                self.kind = "identity" if abs(self.scale - 1.0) < 1e-12 else "constant"
        elif l1 == 0 and torch.allclose(cg[0], cg[0, 0, 0] * torch.eye(d2, dtype=cg.dtype)):
            self.kind, self.scale = "in_scalar", float(cg[0, 0, 0])
        elif lo == 0 and torch.allclose(cg[:, :, 0], cg[0, 0, 0] * torch.eye(d1, dtype=cg.dtype)):
            self.kind, self.scale = "dot", float(cg[0, 0, 0])

    def __call__(self, z: Tensor, a: Tensor, cg: Tensor) -> Tensor:
        kind = self.kind
        if kind == "identity":
            return z
        if kind == "constant":
            return z * self.scale
        if self.scale != 1.0 and kind != "general":
            a = a * self.scale
        if kind == "attr_scalar":
            return z * a.unsqueeze(-1)
        if kind == "in_scalar":
            return z * a.unsqueeze(-2)
        if kind == "dot":
            return (z * a.unsqueeze(-2)).sum(-1, keepdim=True)
        m = torch.einsum("...j,ijk->...ik", a, cg.to(a.dtype))  # [*, 2l₁+1, 2l_o+1]
        return torch.matmul(z, m)  # [*, C, 2l₁+1] @ [*, 2l₁+1, 2l_o+1]


def _cg(l1: int, l2: int, lo: int) -> Tensor:
    """e3nn's CG tensor with "component" normalisation: wigner_3j(l1, l2, lo) · √(2lo+1), [2l1+1, 2l2+1, 2lo+1]."""
    return o3.wigner_3j(l1, l2, lo, dtype=torch.float64) * math.sqrt(2 * lo + 1)


Mixed = tuple  # per input irrep type t: [*, C_t, 2l_t+1] mixed channels or None, see AttrTensorProduct


def gather_mixed(z: Mixed, index: Tensor) -> Mixed:
    """Rows ``index`` [E] of every tensor of a mixed tuple (node → edge); None (a type the part lacks) stays."""
    return tuple(None if t is None else t.index_select(0, index) for t in z)


def add_mixed(z1: Mixed, z2: Mixed) -> Mixed:
    return tuple(b if a is None else a if b is None else a + b for a, b in zip(z1, z2, strict=True))


class AttrTensorProduct(nn.Module):
    """Fully connected CG tensor product with a steerable attribute: y = Σ_paths W_path (x ⊗ a)_path + b.

    Equal to e3nn's ``FullyConnectedTensorProduct(sum(irreps_in), irreps_attr, irreps_out)`` whose weights are
    W·√fan_in (``as_e3nn``, tested), with a bias on the ``0e`` outputs. Weights are initialised like
    ``nn.Linear``: U(±1/√fan_in), fan_in = Σ over the paths into an output irrep of the input multiplicity (as in
    SEGNN's code). With ``irreps_attr = "0e"`` and ``scalar_attr = 1`` it is an equivariant linear layer.

    Evaluation: ``mix`` multiplies each input irrep type t by one weight matrix W_t [M_t, C_t], whose columns
    hold one group per (attribute irrep, output irrep) pair that the selection rules allow; ``couple`` couples
    each group with its attribute irrep (one broadcast product for all output blocks of that irrep) and sums
    the groups per output irrep. Outputs are kept per irrep type, [*, mul, 2l+1], until flattened. ``forward``
    evaluates the "dot" groups (l ⊗ l → 0e) the other way round: Σ_u W_uw (x_u · a) — same numbers, fewer
    operations.

    Args:
        irreps_in: input irreps, or a list of parts that together form the input (e.g. [h_i, h_j, s_ij]); each
            part can be mixed separately (``mix(x, part)``) and the results added (``add_mixed``) before ``couple``.
        irreps_attr: attribute irreps, one copy of each irrep (e.g. ``sh_irreps(lmax)``).
        irreps_out: output irreps (kept as given, not simplified).
        bias: learnable bias on the ``0e`` outputs.
        scalar_attr: the attribute's 0e component is always this constant (1 for SEGNN's node attributes and for
            spherical harmonics in "component" normalisation, 1/√(4π) in "integral" normalisation): use the
            constant instead of reading it (and skip the product when it is 1).
    Forward: x [*, irreps_in.dim] (or a list, one tensor per part), a [*, irreps_attr.dim] → [*, irreps_out.dim].
    """

    def __init__(self, irreps_in, irreps_attr, irreps_out, bias: bool = True, scalar_attr: float | None = None):
        super().__init__()
        parts = [o3.Irreps(p) for p in (irreps_in if isinstance(irreps_in, list) else [irreps_in])]
        self.parts = parts
        self.irreps_attr, self.irreps_out = o3.Irreps(irreps_attr), o3.Irreps(irreps_out)
        if any(mul != 1 for mul, _ in self.irreps_attr):
            raise ValueError(f"attribute irreps must hold one copy of each irrep, got {self.irreps_attr}")
        # output irrep types (first-appearance order), their total multiplicity, and where each block sits
        self.out_types = list(dict.fromkeys(ir for mul, ir in self.irreps_out if mul > 0))
        self.out_mul = {ir: sum(mul for mul, i in self.irreps_out if i == ir) for ir in self.out_types}
        self._out_blocks = []  # (type, offset within the type) per output block
        seen = {ir: 0 for ir in self.out_types}
        for mul, ir in self.irreps_out:
            self._out_blocks.append((ir, seen.get(ir, 0), mul))
            if mul > 0:
                seen[ir] += mul
        # rows of the weight of input type t: that type's blocks, part by part (each part owns a row range)
        in_types = sorted({ir for p in parts for mul, ir in p if mul > 0})
        rows = {t: [(k, b, mul) for k, p in enumerate(parts) for b, (mul, ir) in enumerate(p) if ir == t and mul > 0]
                for t in in_types}
        # groups: (input type, attribute irrep, output irrep) allowed by the selection rules and parity
        groups = [(t, i2, ir_o) for t in in_types for i2, (_, ir2) in enumerate(self.irreps_attr)
                  for ir_o in self.out_types if ir_o in t * ir2]
        self.types = [t for t in in_types if any(g[0] == t for g in groups)]
        self._rows = rows
        m_in = {t: sum(mul for _, _, mul in rows[t]) for t in self.types}
        self.fan_in = {ir_o: sum(m_in[t] for t, _, o in groups if o == ir_o) for ir_o in self.out_types}
        couplers = []
        for t, i2, ir_o in groups:
            cg = _cg(t.l, self.irreps_attr[i2].ir.l, ir_o.l)
            couplers.append((cg, _Coupler(t.l, self.irreps_attr[i2].ir.l, ir_o.l, cg,
                                          scalar_attr if self.irreps_attr[i2].ir == o3.Irrep("0e") else None)))
        # per type, the "dot" groups (l ⊗ l → 0e) last: ``forward`` couples them before mixing (3× to 5× fewer
        # operations than mixing 2l+1 components first); the others are mixed first, then coupled
        order = sorted(range(len(groups)), key=lambda n: (in_types.index(groups[n][0]), couplers[n][1].kind == "dot"))
        self.groups, self._couplers, self.n_cols = [], [], {t: 0 for t in self.types}
        for n, k in enumerate(order):
            t, i2, ir_o = groups[k]
            cg, coupler = couplers[k]
            start = self.n_cols[t]
            self.n_cols[t] += self.out_mul[ir_o]
            self.groups.append({"type": t, "attr": i2, "out": ir_o, "cols": slice(start, self.n_cols[t])})
            self._couplers.append(coupler)
            self.register_buffer(f"cg{n}", cg, persistent=False)  # float64: exact under .double()
        self._groups_of_type = [[n for n, g in enumerate(self.groups) if g["type"] == t] for t in self.types]
        self._col_sizes = [[self.out_mul[self.groups[n]["out"]] for n in ids] for ids in self._groups_of_type]
        self._mixed_first = [[n for n in ids if self._couplers[n].kind != "dot"] for ids in self._groups_of_type]
        self._first_sizes = [[self.out_mul[self.groups[n]["out"]] for n in ids] for ids in self._mixed_first]
        self._dot_first = [[n for n in ids if self._couplers[n].kind == "dot"] for ids in self._groups_of_type]
        self._n_mixed_first = [sum(self.out_mul[self.groups[n]["out"]] for n in ids) for ids in self._mixed_first]
        self.weights = nn.ParameterList()
        for t in self.types:
            w = torch.empty(m_in[t], self.n_cols[t])
            for g in self.groups:
                if g["type"] == t:
                    bound = 1.0 / math.sqrt(self.fan_in[g["out"]])
                    nn.init.uniform_(w[:, g["cols"]], -bound, bound)
            self.weights.append(nn.Parameter(w))
        # per part: block sizes (one split) and, per type, (its block indices, weight rows lo:hi)
        self._part_plan = []
        for k, p in enumerate(parts):
            per_type = {}
            for t in self.types:
                idx = [b for kk, b, _ in rows[t] if kk == k]
                if idx:
                    lo = sum(mul for kk, _, mul in rows[t] if kk < k)
                    per_type[t] = (idx, lo, lo + sum(p[b].mul for b in idx))
            self._part_plan.append(([mul * ir.dim for mul, ir in p], per_type))
        scalar = o3.Irrep("0e")
        self.bias = None
        if bias and scalar in self.out_types:
            bound = 1.0 / math.sqrt(max(self.fan_in[scalar], 1))
            self.bias = nn.Parameter(torch.empty(self.out_mul[scalar]).uniform_(-bound, bound))

    def mix(self, x: Tensor, part: int = 0) -> Mixed:
        """Channel mixing of one input part, x [*, parts[part].dim] → per input type t [*, C_t, 2l_t+1], or None
        where the part has no input of type t."""
        lead = x.shape[:-1]
        sizes, per_type = self._part_plan[part]
        xs = torch.split(x, sizes, dim=-1) if len(sizes) > 1 else (x,)
        out = []
        for t, w in zip(self.types, self.weights, strict=True):
            if t not in per_type:  # this part has no input of type t
                out.append(None)
                continue
            idx, lo, hi = per_type[t]
            wt = w if (lo, hi) == (0, w.shape[0]) else w[lo:hi]
            xb = [xs[b].reshape(*lead, -1, t.dim) for b in idx]
            xb = xb[0] if len(xb) == 1 else torch.cat(xb, dim=-2)  # [*, M, 2l+1]
            # [*, 2l+1, M] @ [M, C] → [*, 2l+1, C] → [*, C, 2l+1] (one copy, so that the couplings run on
            # contiguous memory: strided element-wise products are several times slower on CPU)
            out.append(torch.matmul(xb.transpose(-1, -2), wt).transpose(-1, -2).contiguous())
        return tuple(out)

    def _attrs(self, a: Tensor | None):
        if a is None:
            if any(c.kind not in ("identity", "constant") for c in self._couplers):
                raise ValueError("this tensor product needs its attribute")
            return [None] * len(self.irreps_attr)
        return torch.split(a, [ir.dim for _, ir in self.irreps_attr], dim=-1)

    def couple_types(self, z: Mixed, a: Tensor | None, _partial: dict | None = None) -> dict:
        """CG coupling of mixed channels with the attribute a [*, attr dim] (None for a linear layer, see
        ``scalar_attr``) → {output irrep: [*, total mul, 2l+1]} (bias added)."""
        attrs = self._attrs(a)
        out: dict = {} if _partial is None else _partial
        group_lists = (self._groups_of_type, self._col_sizes) if _partial is None else (self._mixed_first,
                                                                                        self._first_sizes)
        for zt, ids, sizes in zip(z, *group_lists, strict=True):
            if zt is None or not ids:
                continue
            pieces = torch.split(zt, sizes, dim=-2) if len(ids) > 1 else (zt,)
            for n, piece in zip(ids, pieces, strict=True):
                g = self.groups[n]
                y = self._couplers[n](piece, attrs[g["attr"]], getattr(self, f"cg{n}"))
                out[g["out"]] = y if g["out"] not in out else out[g["out"]] + y
        ref = next((zt for zt in z if zt is not None), None)
        if ref is None:
            ref = next(iter(out.values()))
        for ir in self.out_types:
            if ir not in out:  # no path reaches this irrep
                out[ir] = ref.new_zeros(*ref.shape[:-2], self.out_mul[ir], ir.dim)
        if self.bias is not None:
            s = o3.Irrep("0e")
            out[s] = out[s] + self.bias.unsqueeze(-1)
        return out

    def flatten(self, per_type: dict) -> Tensor:
        """{irrep: [*, mul, 2l+1]} → the e3nn irreps array [*, irreps_out.dim] (blocks in ``irreps_out`` order)."""
        if len(self._out_blocks) == len(self.out_types):  # one block per type: no re-slicing
            return _flatten([per_type[ir] for ir, _, _ in self._out_blocks])
        return _flatten([per_type[ir].narrow(-2, off, mul) for ir, off, mul in self._out_blocks if mul > 0])

    def couple(self, z: Mixed, a: Tensor | None) -> Tensor:
        return self.flatten(self.couple_types(z, a))

    def mix_all(self, x) -> Mixed:
        xs = x if isinstance(x, (list, tuple)) else [x]
        z = self.mix(xs[0], 0)
        for k in range(1, len(xs)):
            z = add_mixed(z, self.mix(xs[k], k))
        return z

    def forward(self, x, a: Tensor | None) -> Tensor:
        return self.flatten(self.forward_types(x, a))

    def forward_types(self, x, a: Tensor | None) -> dict:
        """The whole product on the full input (x a tensor or a list of parts), evaluated with the "dot" groups
        coupled first: Σ_u W_uw (x_u · a) instead of (Σ_u W_uw x_u) · a. → {output irrep: [*, mul, 2l+1]}."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        lead = xs[0].shape[:-1]
        blocks = [torch.split(xk, sizes, dim=-1) if len(sizes) > 1 else (xk,)
                  for xk, (sizes, _) in zip(xs, self._part_plan, strict=True)]
        attrs = self._attrs(a)
        z, out = [], {}
        for ti, (t, w) in enumerate(zip(self.types, self.weights, strict=True)):
            xt = [blocks[k][b].reshape(*lead, mul, t.dim) for k, b, mul in self._rows[t]]
            xt = xt[0] if len(xt) == 1 else torch.cat(xt, dim=-2)  # [*, M_t, 2l+1], rows of w in order
            n_first = self._n_mixed_first[ti]
            z.append(torch.matmul(xt.transpose(-1, -2), w[:, :n_first]).transpose(-1, -2).contiguous()
                     if n_first else None)
            for n in self._dot_first[ti]:
                g, c = self.groups[n], self._couplers[n]
                d = (xt * (attrs[g["attr"]] * c.scale).unsqueeze(-2)).sum(-1)  # [*, M_t]: x_u · a
                y = torch.matmul(d, w[:, g["cols"]]).unsqueeze(-1)  # [*, C, 1]
                out[g["out"]] = y if g["out"] not in out else out[g["out"]] + y
        return self.couple_types(tuple(z), a, _partial=out)

    def extra_repr(self) -> str:
        return f"{' | '.join(str(p) for p in self.parts)} ⊗ {self.irreps_attr} → {self.irreps_out}"

    @torch.no_grad()
    def as_e3nn(self) -> o3.FullyConnectedTensorProduct:
        """The same map (without the bias) as an e3nn ``FullyConnectedTensorProduct`` on the concatenated input
        (for validation: e3nn's weights are ours times √fan_in, its path normalisation)."""
        whole = o3.Irreps(sum((list(p) for p in self.parts), []))
        blocks = [(k, b) for k, p in enumerate(self.parts) for b in range(len(p))]
        dtype, default = self.weights[0].dtype, torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # e3nn bakes its CG constants in the default dtype
        try:
            ref = o3.FullyConnectedTensorProduct(whole, self.irreps_attr, self.irreps_out)
        finally:
            torch.set_default_dtype(default)
        for w, ins in zip(ref.weight_views(), ref.instructions, strict=True):
            t, (k, b) = whole[ins.i_in1].ir, blocks[ins.i_in1]
            lo = 0
            for kk, bb, mul in self._rows[t]:
                if (kk, bb) == (k, b):
                    break
                lo += mul
            ir_o, off, mul_o = self._out_blocks[ins.i_out]
            g = next(g for g in self.groups if (g["type"], g["attr"], g["out"]) == (t, ins.i_in2, ir_o))
            cols = slice(g["cols"].start + off, g["cols"].start + off + mul_o)
            mine = self.weights[self.types.index(t)][lo : lo + whole[ins.i_in1].mul, cols]
            w.copy_(mine.unsqueeze(1) * math.sqrt(self.fan_in[ir_o]))
        return ref


def _flatten(blocks: list[Tensor]) -> Tensor:
    """Per-block tensors [*, mul, 2l+1] → one e3nn irreps array [*, Σ mul·(2l+1)]."""
    lead = blocks[0].shape[:-2]
    flat = [b.reshape(*lead, -1) for b in blocks]
    return torch.cat(flat, dim=-1) if len(flat) > 1 else flat[0]


def gate_irreps(irreps_out) -> tuple[o3.Irreps, o3.Irreps, o3.Irreps]:
    """(scalars, gates, gated) of a gate whose output is ``irreps_out``: 0e scalars pass through the activation,
    every other irrep (including 0o, to keep parity) is multiplied by its own 0e gate."""
    irreps_out = o3.Irreps(irreps_out).simplify()
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir == o3.Irrep("0e")])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir != o3.Irrep("0e")])
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
    return scalars, gates, gated


def make_gate(irreps_out, act: str = "silu") -> Gate:
    """e3nn's ``Gate`` with output ``irreps_out`` (input: scalars + gates + gated, see ``gate_irreps``)."""
    scalars, gates, gated = gate_irreps(irreps_out)
    return Gate(scalars, [activation(act)], gates, [torch.sigmoid] if gated.num_irreps else [], gated)


class GatedBlock(nn.Module):
    """``AttrTensorProduct`` followed by a gate (Weiler et al. 2018), computed on the product's per-irrep outputs.

    Output: act(s) for the 0e scalars s, sigmoid(g_k)·V_k for every other irrep V_k with its own gate scalar g_k;
    both activations rescaled to unit second moment. This is exactly e3nn's ``Gate`` (``make_gate(irreps_out)``)
    applied to ``self.tp``'s output (tested), without its split/concatenate round trip.

    Args: irreps_in (irreps or list of parts), irreps_attr, irreps_out (after the gate: simplified, 0e first),
        act, scalar_attr.
    Forward: as ``AttrTensorProduct`` (``mix``/``couple`` are exposed too) → [*, irreps_out.dim].
    """

    def __init__(self, irreps_in, irreps_attr, irreps_out, act: str = "silu", scalar_attr: float | None = None):
        super().__init__()
        scalars, gates, gated = gate_irreps(irreps_out)
        if not scalars:
            raise ValueError(f"a gated block needs 0e scalars in its output, got {irreps_out}")
        self.irreps_out = scalars + gated
        self.tp = AttrTensorProduct(irreps_in, irreps_attr, scalars + gates + gated,
                                    scalar_attr=scalar_attr)
        self.act = normalize2mom(activation(act))
        self.gate_cst = normalize2mom(torch.sigmoid).cst
        self.n_scalars = scalars.num_irreps
        self.gated = [(ir, mul) for mul, ir in gated]

    def mix(self, x: Tensor, part: int = 0) -> Mixed:
        return self.tp.mix(x, part)

    def couple(self, z: Mixed, a: Tensor | None) -> Tensor:
        return self._gate(self.tp.couple_types(z, a))

    def _gate(self, out: dict) -> Tensor:
        s = out[o3.Irrep("0e")]  # [*, scalars + gates, 1]
        if not self.gated:
            return self.act(s).flatten(-2)
        s, g = torch.split(s, [self.n_scalars, s.shape[-2] - self.n_scalars], dim=-2)
        g = torch.sigmoid(g) * self.gate_cst
        gs = torch.split(g, [mul for _, mul in self.gated], dim=-2) if len(self.gated) > 1 else (g,)
        return _flatten([self.act(s)] + [out[ir] * gk for (ir, _), gk in zip(self.gated, gs, strict=True)])

    def forward(self, x, a: Tensor | None) -> Tensor:
        return self._gate(self.tp.forward_types(x, a))


class ChannelwiseTensorProduct(nn.Module):
    """TFN's tensor-field convolution kernel, e3nn "uvu" mode with per-edge weights:

        y_{path, u} = R_{path, u} · CG(x_{b(path), u}, Y^{l_f})          for every path b ⊗ l_f → l_o

    Equal to e3nn's ``TensorProduct(irreps_in, irreps_sh, irreps_out, [(b, f, o, "uvu", True) …])`` with external
    per-edge weights (tested). x [*, irreps_in.dim] (a gathered node feature), y_sh [*, irreps_sh.dim] (the
    filter's angular part Y(r̂)), weights [*, weight_numel] (its radial part R) → [*, irreps_out.dim], where
    ``irreps_out`` holds, per output type in ``out_types`` (in that order), one block of mul channels for every
    path reaching it.
    """

    def __init__(self, irreps_in, irreps_sh, out_types):
        super().__init__()
        self.irreps_in, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        out_types = [o3.Irrep(t) for t in out_types]
        paths = [(ib, i2, ir_o) for ir_o in out_types for ib, (mul, ir1) in enumerate(self.irreps_in)
                 for i2, (_, ir2) in enumerate(self.irreps_sh) if mul > 0 and ir_o in ir1 * ir2]
        self.paths, self._couplers = [], []
        for n, (ib, i2, ir_o) in enumerate(paths):
            ir1, ir2 = self.irreps_in[ib].ir, self.irreps_sh[i2].ir
            cg = _cg(ir1.l, ir2.l, ir_o.l)
            self.paths.append({"in": ib, "attr": i2, "out": ir_o, "mul": self.irreps_in[ib].mul})
            self._couplers.append(_Coupler(ir1.l, ir2.l, ir_o.l, cg, 1.0 if ir2 == o3.Irrep("0e") else None))
            self.register_buffer(f"cg{n}", cg, persistent=False)  # float64: exact under .double()
        self.weight_numel = sum(p["mul"] for p in self.paths)
        self.irreps_out = o3.Irreps([(p["mul"], p["out"]) for p in self.paths])

    def forward(self, x: Tensor, y_sh: Tensor, weights: Tensor) -> Tensor:
        lead = x.shape[:-1]
        xs = torch.split(x, [mul * ir.dim for mul, ir in self.irreps_in], dim=-1)
        xb = [xi.reshape(*lead, mul, ir.dim) for xi, (mul, ir) in zip(xs, self.irreps_in, strict=True)]
        ys = torch.split(y_sh, [ir.dim for _, ir in self.irreps_sh], dim=-1)
        ws = torch.split(weights.unsqueeze(-1), [p["mul"] for p in self.paths], dim=-2)
        out = [coupler(xb[p["in"]] * w, ys[p["attr"]], getattr(self, f"cg{n}"))
               for n, (p, coupler, w) in enumerate(zip(self.paths, self._couplers, ws, strict=True))]
        return _flatten(out)


def radial_mlp(d_in: int, hidden: int, d_out: int, act: str = "silu") -> nn.Sequential:
    """Radial network R(‖r_ij‖, edge scalars) [E, d_in] → [E, d_out]: Linear(d_in→hidden), LayerNorm, act,
    Linear(hidden→hidden), LayerNorm, act, Linear(hidden→d_out). The per-edge LayerNorms (in place of the
    SE(3)-Transformer code's BatchNorms, which would couple the graphs of a batch) keep R of order one whatever
    the scale of the raw edge features (e.g. squared distances)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.LayerNorm(hidden), activation(act),
                         nn.Linear(hidden, hidden), nn.LayerNorm(hidden), activation(act), nn.Linear(hidden, d_out))


def input_irreps(node_dim: int, centre: bool) -> o3.Irreps:
    """Irreps of ``steerable_inputs``' node features: node_dim × 0e, then 1o for x − x̄ (if centre) and 1o for v."""
    return o3.Irreps(([(node_dim, "0e")] if node_dim else []) + [(1 + int(centre), "1o")])


def steerable_inputs(batch: GraphBatch, centre: bool = True, edge_distance: bool = True):
    """Translation-invariant inputs of the e3nn propagators.

    Returns:
        f: [ΣN, F + 3·(1 + centre)] node features [h, x − x̄_g (if centre), v], irreps ``input_irreps``; x̄_g is
            the centroid of node i's graph (a segment mean over ``batch.batch``).
        rel: [E, 3] r_ij = x_i − x_j (i = receiver).
        s: [E, S] edge scalars [‖r_ij‖ (if edge_distance), edge features].
    """
    x, v = batch.x, batch.v
    i, j = batch.edge_index
    rel = x.index_select(0, i) - x.index_select(0, j)
    parts = [batch.h]
    if centre:
        centroid = scatter_mean(x, batch.batch, batch.num_graphs)
        parts.append(x - centroid.index_select(0, batch.batch))
    parts.append(v)
    f = torch.cat(parts, dim=-1)
    s = torch.cat([rel.norm(dim=-1, keepdim=True), batch.edge_attr], dim=-1) if edge_distance else batch.edge_attr
    return f, rel, s


def steerable_attributes(rel: Tensor, v: Tensor, receivers: Tensor, lmax: int, normalization: str = "integral",
                         edge_weight: Tensor | None = None):
    """SEGNN's steerable attributes: spherical harmonics up to ``lmax`` in e3nn's ``normalization`` ("integral",
    as the official code: Y⁰ = 1/√(4π); or "component": Y⁰ = 1).

    Args: rel [E, 3] r_ij; v [ΣN, 3] velocities; receivers [E] i of each edge; edge_weight [E] smooth-cutoff
        weights or None (the mean becomes the w-weighted mean Σ_j w_ij Y(r_ij) / max(Σ_j w_ij, 1)).
    Returns: a_edge [E, A] = Y(r_ij); a_node [ΣN, A] = Y(v_i) + mean_j Y(r_ij), its 0e component set to 1 (as in
        the official code, also for isolated nodes). A zero vector has Y^{l>0} = 0.
    """
    irreps = sh_irreps(lmax)
    a_edge = o3.spherical_harmonics(irreps, rel, normalize=True, normalization=normalization)
    a_node = (weighted_scatter(a_edge, receivers, v.shape[0], edge_weight, mean=True)
              + o3.spherical_harmonics(irreps, v, normalize=True, normalization=normalization))
    return a_edge, torch.cat([torch.ones_like(a_node[:, :1]), a_node[:, 1:]], dim=-1)

"""Holonomic projection of positions onto reference bond lengths (an equivariant, SHAKE-like correction).

Given positions x [ΣN, 3] and bonds (i, j) with reference lengths L_ij, iterate

    d_ij = x_i − x_j,   c_ij = ω (‖d_ij‖ − L_ij) d_ij / (2 ‖d_ij‖ max(deg i, deg j))
    x_i ← x_i − Σ_{bonds of i} c_ij,   x_j ← x_j + Σ_{bonds of j} c_ij

(Jacobi sweeps with equal masses, every bond at once through index_add, over-relaxation ω) until the largest
relative violation |‖d_ij‖ − L_ij| / L_ij is below ``tol``. Every correction is along a bond vector and equal
and opposite at its two ends, so the result is E(3)-equivariant and the centroid of every molecule is
unchanged. Used by stochastic rollouts so that sampled noise never stretches the topology's bonds.
"""

from __future__ import annotations

import torch
from torch import Tensor


def project_bond_lengths(x: Tensor, bonds: Tensor, lengths: Tensor, *, iterations: int = 200, tol: float = 1e-6,
                         omega: float = 1.5, check_every: int = 10) -> tuple[Tensor, float]:
    """Positions closest (in the SHAKE sense) to ``x`` whose bond lengths equal ``lengths``.

    Args:
        x: [ΣN, 3] positions. bonds: [2, E] atom pairs (each bond once; direction irrelevant).
        lengths: [E] reference lengths (same unit as x). iterations: most sweeps. tol: relative violation at
        which to stop (tested every ``check_every`` sweeps; tol = 0: always ``iterations`` sweeps, no host sync,
        differentiable). omega: over-relaxation factor (1 = plain Jacobi; < 2 for convergence).
    Returns: (projected positions [ΣN, 3], largest relative violation left).
    """
    if bonds.numel() == 0:
        return x, 0.0
    i, j = bonds
    n = x.shape[0]
    deg = torch.zeros(n, dtype=x.dtype, device=x.device)
    deg.index_add_(0, i, torch.ones_like(i, dtype=x.dtype)).index_add_(0, j, torch.ones_like(j, dtype=x.dtype))
    scale = 0.5 * omega / torch.maximum(deg[i], deg[j])  # [E]: equal and opposite corrections
    lengths = lengths.to(x.dtype)
    inv_len = 1.0 / lengths.clamp_min(1e-12)
    for sweep in range(iterations):
        d = x.index_select(0, i) - x.index_select(0, j)
        norm = d.norm(dim=-1).clamp_min(1e-12)
        err = norm - lengths
        if tol > 0 and sweep % check_every == 0 and (err.abs() * inv_len).max().item() < tol:
            break
        c = (scale * err / norm).unsqueeze(-1) * d  # [E, 3]
        x = x + torch.zeros_like(x).index_add_(0, j, c).index_add_(0, i, -c)
    d = x.index_select(0, i) - x.index_select(0, j)
    return x, ((d.norm(dim=-1) - lengths).abs() * inv_len).max().item()


def restore_handedness(x: Tensor, centres: Tensor, signs: Tensor) -> tuple[Tensor, int]:
    """Reflect the leaf atom c of every stereo centre (o, a, b, c) whose signed volume has lost its sign through
    the plane (o, a, b), so that a rollout cannot turn L-alanine into D-alanine (an E(3)-equivariant model with
    distance constraints cannot tell a molecule from its mirror image). Bond lengths and angles are unchanged
    (o, a and b lie in the mirror plane). Equivariant under rotations, translations and, with ``signs`` taken
    from the reflected start, reflections.

    Args: x [ΣN, 3]; centres [Q, 4] atom indices (``data.geometry.stereo_centres``); signs [Q] ±1 wanted.
    Returns: (positions [ΣN, 3], number of centres restored).
    """
    if centres.numel() == 0:
        return x, 0
    from .geometry import signed_volumes

    flipped = torch.sign(signed_volumes(x, centres)) != signs
    if not bool(flipped.any()):
        return x, 0
    o, a, b, c = centres[flipped].unbind(1)
    n = torch.linalg.cross(x[a] - x[o], x[b] - x[o])
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    height = ((x[c] - x[o]) * n).sum(-1, keepdim=True)
    x = x.clone()
    x[c] = x[c] - 2.0 * height * n
    return x, int(flipped.sum())


def close_contacts(x: Tensor, floor: float, batch: Tensor, excluded: Tensor) -> Tensor:
    """[2, C] pairs (i < j, same graph) closer than ``floor`` that are not among the ``excluded`` pairs [2, P]
    (i < j: the pairs a topology fixes or places close, e.g. ``geometry.constraint_pairs(…, angles=True)``)."""
    from .neighbors import radius_graph

    n = x.shape[0]
    i, j = radius_graph(x.detach(), floor, batch)
    keep = i < j
    i, j = i[keep], j[keep]
    if excluded.numel():
        keep = ~torch.isin(i * n + j, excluded[0] * n + excluded[1])
        i, j = i[keep], j[keep]
    return torch.stack([i, j])


def project_with_contacts(x: Tensor, pairs: Tensor, lengths: Tensor, *, floor: float, batch: Tensor,
                          excluded: Tensor, rounds: int = 4, tol: float = 1e-5, iterations: int = 200,
                          ) -> tuple[Tensor, int]:
    """Positions with the constrained ``pairs`` at their ``lengths`` (:func:`project_bond_lengths`) and no other
    pair closer than ``floor`` (excluded volume, an inequality): each round finds the pairs inside the floor and
    projects them onto it together with the constraints (an active set), until a round finds none new.
    Equivariant like the bond projection (every correction is along a pair vector, equal and opposite).

    Args: x [ΣN, 3]; pairs [2, P] and lengths [P] the equality constraints; floor the closest distance allowed to
    other pairs (same unit as x); batch [ΣN] graph of each atom; excluded [2, Q] pairs (i < j) exempt from the
    floor (bonded, 1-3). Returns (positions, number of contacts still inside the floor at the last check:
    0 when the projection ended clear of them).
    """
    x, _ = project_bond_lengths(x, pairs, lengths, tol=tol, iterations=iterations)
    active = torch.empty((2, 0), dtype=torch.long, device=x.device)
    n = x.shape[0]
    inside = floor * (1.0 - 10.0 * tol)  # a pair projected onto the floor is not a new contact
    new = close_contacts(x, inside, batch, excluded)
    for _ in range(rounds):
        if new.shape[1] == 0:
            break
        keys = torch.unique(torch.cat([active[0] * n + active[1], new[0] * n + new[1]]))
        active = torch.stack([keys // n, keys % n])
        x, _ = project_bond_lengths(x, torch.cat([pairs, active], 1),
                                    torch.cat([lengths, lengths.new_full((active.shape[1],), floor)]), tol=tol,
                                    iterations=iterations)
        new = close_contacts(x, inside, batch, excluded)
    return x, int(new.shape[1])

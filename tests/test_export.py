"""`mdsurrogate export`: torch.export archives of a potential and a propagator that load and run in a fresh Python
process that cannot import mdsurrogate, and reproduce the eager model; the shipped pure-torch neighbour search
agrees with mdsurrogate's; bad input is one sentence.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111

from mdsurrogate.apps.export import ExportError, export_model, load_exported
from mdsurrogate.apps.export_neighbors import neighbor_list as plain_neighbor_list
from mdsurrogate.data.featurize import Featurizer
from mdsurrogate.data.graph import sizes_to_ptr
from mdsurrogate.data.neighbors import graph_cells, neighbor_list
from mdsurrogate.data.topology import BatchTopology, EdgeSet
from mdsurrogate.io.atomic import OutputExistsError
from mdsurrogate.training.checkpoint import Checkpoint, DatasetInfo

from .conftest import invoke, last_json, perturbed_model
from .test_ase_integration import AG, cluster, periodic_triclinic, random_potential, save_potential

NBODY = {"global_graph": {"kind": "complete"}, "node": ["speed", "charge"], "edge": ["charge_product", "dist2"],
         "scales": {"speed": 0.5}}


@pytest.fixture(scope="module")
def potential(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = random_potential(seed=5)
    ck = save_potential(root / "pot.pt", model)
    res = export_model(ck, root / "pot.pt2", dtype="float64")
    return model, ck, res


@pytest.fixture(scope="module")
def propagator(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    from mdsurrogate.models.registry import build_model

    spec = Featurizer(NBODY).spec
    model = build_model("egnn", node_dim=spec.node_dim, edge_dim=spec.edge_dim, local_edge_dim=0, hidden=16,
                        layers=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ck = Checkpoint(kind="propagator", model_name="egnn", hparams={"hidden": 16, "layers": 3},
                    state_dict=model.state_dict(), features=NBODY,
                    dataset=DatasetInfo(name="nbody", units={"length": "1", "time": "1"}, frame_dt=0.1,
                                        delta_frames=10, delta_time=1.0))
    ck.save(root / "egnn.pt")
    res = export_model(root / "egnn.pt", root / "egnn.pt2", dtype="float64")
    return root / "egnn.pt", res


def _structures():
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    a.numbers[[1, 9]] = AG
    a.rattle(0.07, seed=2)
    return [a, cluster(seed=3), periodic_triclinic(seed=1)]


# ----------------------------------------------------------------------------------------------------------


def test_fresh_process_without_mdsurrogate_reproduces_both_models(potential, propagator, tmp_path):
    model, _, pot = potential
    prop_ck, prop = propagator
    # eager references (float64) computed here, with mdsurrogate
    refs = {}
    for k, a in enumerate(_structures()):
        out = model(torch.as_tensor(a.numbers), torch.as_tensor(a.positions), None, torch.as_tensor(a.cell.array),
                    torch.as_tensor(a.pbc), 1, compute_stress=bool(a.pbc.any()))
        refs[f"s{k}.numbers"] = torch.as_tensor(a.numbers)
        refs[f"s{k}.positions"] = torch.as_tensor(a.positions)
        refs[f"s{k}.cell"] = torch.as_tensor(np.asarray(a.cell.array))
        refs[f"s{k}.pbc"] = torch.as_tensor(a.pbc)
        refs[f"s{k}.energy"] = out["energy"].detach()
        refs[f"s{k}.forces"] = out["forces"].detach()
        refs[f"s{k}.atom_energies"] = out["atom_energies"].detach()
        if a.pbc.any():
            refs[f"s{k}.stress"] = out["stress"].detach()
    ck = Checkpoint.load(prop_ck)
    net, featurizer = ck.build_model(dtype=torch.float64), ck.featurizer()
    sizes = torch.tensor([5, 9, 4])
    g = torch.Generator().manual_seed(3)
    n = int(sizes.sum())
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2
    v = torch.randn(n, 3, generator=g, dtype=torch.float64)
    charge = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).double()
    with torch.no_grad():
        pred = net(featurizer(x, v, BatchTopology(sizes_to_ptr(sizes), {"charge": charge})))
    refs.update({"p.x": x, "p.v": v, "p.charge": charge, "p.sizes": sizes, "p.x_next": pred.x, "p.v_next": pred.v})
    torch.save(refs, tmp_path / "refs.pt")

    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["mdsurrogate"] = None          # any import of mdsurrogate now fails
        import torch

        def load(path):
            extra = {{"mdsurrogate.json": "", "neighbors.py": ""}}
            program = torch.export.load(path, extra_files=extra).module()
            return program, json.loads(extra["mdsurrogate.json"]), extra["neighbors.py"]

        refs = torch.load({str(tmp_path / "refs.pt")!r}, weights_only=True)
        report = {{}}
        # the potential, its graph from the neighbour search shipped in the archive
        pot, meta, source = load({str(pot.path)!r})
        nb = {{}}
        exec(source, nb)
        assert meta["kind"] == "potential"
        for k in range(3):
            r = {{name.split(".", 1)[1]: t for name, t in refs.items() if name.startswith(f"s{{k}}.")}}
            x = r["positions"]
            periodic = bool(r["pbc"].any())
            edge_index, shifts = nb["neighbor_list"](x, meta["cutoff"], r["cell"] if periodic else None, r["pbc"])
            batch = torch.zeros(x.shape[0], dtype=torch.long)
            cell = r["cell"][None] if periodic else torch.zeros(1, 3, 3, dtype=x.dtype)
            energy, eps, forces, stress = pot(r["numbers"], x, cell, batch, edge_index, shifts)
            err = {{"energy": float((energy - r["energy"]).abs().max()),
                    "forces": float((forces - r["forces"]).abs().max()),
                    "atom_energies": float((eps - r["atom_energies"]).abs().max())}}
            if periodic:
                err["stress"] = float((stress - r["stress"]).abs().max())
            else:
                err["stress_is_nan"] = bool(stress.isnan().all())
            report[f"potential{{k}}"] = err
        # the propagator: complete graph per system, raw charges as the node property
        prop, pmeta, psource = load({str(prop.path)!r})
        nb = {{}}
        exec(psource, nb)
        sizes = refs["p.sizes"]
        ptr = torch.zeros(len(sizes) + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(sizes, 0)
        batch = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
        edge_index = torch.cat([nb["complete_graph"](int(s)) + int(o) for s, o in zip(sizes, ptr[:-1])], dim=1)
        x_next, v_next = prop(refs["p.x"], refs["p.v"], batch, ptr, edge_index, torch.zeros(2, 0, dtype=torch.long),
                              {{"charge": refs["p.charge"]}}, {{}}, {{}})
        report["propagator"] = {{"x": float((x_next - refs["p.x_next"]).abs().max()),
                                 "v": float((v_next - refs["p.v_next"]).abs().max()),
                                 "moved": float((x_next - refs["p.x"]).abs().max())}}
        report["graph"] = pmeta["global_graph"]["kind"]
        report["mdsurrogate_loaded"] = sorted(m for m in sys.modules if m.startswith("mdsurrogate.")
                                              or (m == "mdsurrogate" and sys.modules[m] is not None))
        print(json.dumps(report))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["mdsurrogate_loaded"] == []
    for k in range(3):
        errs = report[f"potential{k}"]
        assert errs["energy"] < 1e-5 and errs["forces"] < 1e-5 and errs["atom_energies"] < 1e-5, errs
        assert errs.get("stress", 0.0) < 1e-5 and errs.get("stress_is_nan", True), errs
    assert report["propagator"]["x"] < 1e-5 and report["propagator"]["v"] < 1e-5, report
    assert report["propagator"]["moved"] > 1e-3  # the step does something
    assert report["graph"] == "complete"


def test_metadata_documents_the_signature(potential, propagator):
    _, _, pot = potential
    program, meta, source = load_exported(pot.path)
    assert [i["name"] for i in meta["inputs"]] == ["numbers", "positions", "cell", "batch", "edge_index", "shifts"]
    assert [o["name"] for o in meta["outputs"]] == ["energy", "atom_energies", "forces", "stress"]
    assert meta["cutoff"] == pytest.approx(3.4) and meta["elements"] == [29, 47] and meta["dtype"] == "float64"
    assert "import mdsurrogate" not in source and "from mdsurrogate" not in source
    _, pmeta, _ = load_exported(propagator[1].path)
    assert pmeta["kind"] == "propagator" and pmeta["delta_time"] == 1.0
    assert next(i for i in pmeta["inputs"] if i["name"] == "node_props")["keys"] == ["charge"]
    assert pot.max_abs_error < 1e-9 and propagator[1].max_abs_error < 1e-9


@pytest.mark.parametrize("case", ["triclinic_small", "triclinic64", "free", "slab", "wrapped_outside"])
def test_shipped_neighbour_search_matches_mdsurrogates(case):
    cutoff = 3.4
    if case == "triclinic_small":
        a = bulk("Cu", "fcc", a=3.6)  # one atom, many images of itself
        a = a.repeat((2, 1, 1))
    elif case == "triclinic64":
        a = periodic_triclinic()
    elif case == "free":
        a = cluster()
    elif case == "slab":
        a = fcc111("Cu", size=(2, 2, 3), vacuum=4.0)
        a.pbc = [True, True, False]
    else:
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        a.positions += np.random.default_rng(0).normal(0, 6.0, a.positions.shape)  # far outside the cell
    x = torch.as_tensor(a.positions)
    cell64, pbc = graph_cells(np.asarray(a.cell.array), np.asarray(a.pbc), 1, "cpu")
    ref_e, ref_s = neighbor_list(x, cutoff, torch.zeros(len(a), dtype=torch.long), cell64, pbc)
    e, s = plain_neighbor_list(x, cutoff, torch.as_tensor(np.asarray(a.cell.array)) if a.pbc.any() else None, a.pbc)

    def keyed(ei, sh):
        return sorted(zip(ei[0].tolist(), ei[1].tolist(), *[sh[:, k].round().long().tolist() for k in range(3)],
                          strict=True))

    assert keyed(e, s) == keyed(ref_e, ref_s)
    assert e.shape[1] > 0


def test_export_refuses_to_overwrite_and_reports_bad_input(potential, tmp_path):
    _, ck, res = potential
    with pytest.raises(OutputExistsError):
        export_model(ck, res.path)
    with pytest.raises(ExportError, match="not a loadable"):
        (tmp_path / "junk.pt2").write_bytes(b"junk")
        load_exported(tmp_path / "junk.pt2")
    r = invoke("export", tmp_path / "missing_run", tmp_path / "x.pt2")
    assert r.exit_code == 2 and "does not exist" in r.stderr
    r = invoke("export", ck, res.path)
    assert r.exit_code == 2 and "already exists" in r.stderr


def test_export_cli_writes_an_archive(propagator, tmp_path):
    ck, _ = propagator
    r = invoke("export", ck, tmp_path / "out.pt2", "--json")
    assert r.exit_code == 0, r.output
    info = last_json(r)
    assert info["kind"] == "propagator" and info["model"] == "egnn" and info["dtype"] == "float32"
    assert info["max_abs_error"] < 1e-4 and (tmp_path / "out.pt2").is_file()
    assert info["outputs"] == ["x_next", "v_next"]


@pytest.mark.parametrize("name", ["eghn"])
def test_models_with_local_graphs_export(name, tmp_path):
    """EGHN (local graph, pooling) exports too; the check inside export_model compares it with the eager model."""
    from .conftest import FEATURES

    model = perturbed_model(name, hidden=8, n_clusters=3)
    ck = Checkpoint(kind="propagator", model_name=name, hparams={"hidden": 8, "n_clusters": 3},
                    state_dict=model.state_dict(), features=FEATURES, dataset=DatasetInfo(units={"length": "Å"}))
    res = export_model(ck, tmp_path / f"{name}.pt2", dtype="float64")
    assert res.max_abs_error < 1e-9
    _, meta, _ = load_exported(res.path)
    assert meta["uses_local_graph"] is True
    assert next(i for i in meta["inputs"] if i["name"] == "node_props")["keys"] == ["charge", "group"]


@pytest.mark.slow
def test_aot_inductor_package_reproduces_the_potential(potential, tmp_path):
    """AOTInductor (C++ compilation, about a minute): the package loads with torch alone and matches the model."""
    import shutil

    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler")
    model, ck, _ = potential
    res = export_model(ck, tmp_path / "pot_aoti.pt2", dtype="float64", aot_inductor=True)
    program, meta, source = load_exported(res.path)
    assert meta["package"] == "aot_inductor" and "neighbor_list" in source
    import torch._inductor

    direct = torch._inductor.aoti_load_package(str(res.path))
    a = _structures()[0]
    nb = {}
    exec(source, nb)
    x = torch.as_tensor(a.positions)
    cell = torch.as_tensor(np.asarray(a.cell.array))
    ei, sh = nb["neighbor_list"](x, meta["cutoff"], cell, a.pbc)
    energy, eps, forces, stress = direct(torch.as_tensor(a.numbers), x, cell[None],
                                         torch.zeros(len(a), dtype=torch.long), ei, sh)
    ref = model(torch.as_tensor(a.numbers), x, None, cell, torch.as_tensor(a.pbc), 1, compute_stress=True)
    assert float((energy - ref["energy"].detach()).abs().max()) < 1e-8
    assert float((forces - ref["forces"].detach()).abs().max()) < 1e-8
    assert float((stress - ref["stress"].detach()).abs().max()) < 1e-8
    assert res.max_abs_error < 1e-9


def test_exported_propagator_keeps_the_input_speed_limit(propagator, tmp_path):
    """A checkpoint with an input speed limit exports a program that shortens faster input velocities to it, as
    `Surrogate.predict` does; the metadata names the limit."""
    from mdsurrogate.apps.export import _propagator_example
    from mdsurrogate.simulation.surrogate import Surrogate

    path, _ = propagator
    ck = Checkpoint.load(path)
    ck.extra = {**(ck.extra or {}), "input_speed_limit": 0.5}
    ck.save(tmp_path / "limited.pt")
    export_model(tmp_path / "limited.pt", tmp_path / "limited.pt2", dtype="float64")
    program, meta, _ = load_exported(tmp_path / "limited.pt2")
    assert meta["input_speed_limit"] == 0.5
    args = list(_propagator_example(ck.featurizer(), torch.float64, seed=4))
    args[1] = args[1] * 3  # most atoms faster than the limit
    x_next, v_next = program(*args)
    sur = Surrogate.from_checkpoint(Checkpoint.load(tmp_path / "limited.pt"), device="cpu", dtype="float64")
    topo = BatchTopology(args[3], dict(args[6]), {"local": EdgeSet(args[5], dict(args[8]))})
    pred = sur.predict(args[0], args[1], topo)
    assert torch.allclose(x_next, pred.x, atol=1e-9) and torch.allclose(v_next, pred.v, atol=1e-9)
    unlimited, _, _ = load_exported(export_model(path, tmp_path / "free.pt2", dtype="float64").path)
    assert (unlimited(*args)[0] - x_next).abs().max() > 1e-4

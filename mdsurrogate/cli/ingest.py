"""`mdsurrogate ingest …`: simulators, motion capture, ASE frames and MD trajectories → datasets."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .app import JSON_OUT, NEW_DATASET, OVERWRITE, emit_json, err, fail, friendly, ingest_app, input_errors, warn


@ingest_app.command("nbody")
@friendly
def ingest_nbody_cmd(
    out_dir: Path = NEW_DATASET,
    train: int = typer.Option(3000, help="Training simulations (paper: first 3000 of 10 000)."),
    val: int = typer.Option(2000, help="Validation simulations."),
    test: int = typer.Option(2000, help="Test simulations."),
    seed: int = typer.Option(43, help="Seed of the one legacy-NumPy stream (paper: 43)."),
    stream_train: int = typer.Option(10000, help="Train initial conditions drawn before val/test, as the official "
                                     "generator does (keeps val/test identical whatever --train is)."),
    horizon: int = typer.Option(20, help="Model steps (Δ = 10 frames) the validation and test systems are continued "
                                "after the input frame: references for rollouts; the samples stay the paper's."),
    train_horizon: int = typer.Option(1, help="The same for the training systems (≥ the recipe's "
                                      "train.rollout_steps to train on rollouts)."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_OUT,
):
    """Simulate the charged N-body system (EGNN paper, Table 2) and write the dataset (frames 30 → 40)."""
    check_output(out_dir, overwrite)
    from ..data.ingest import ingest_nbody

    if min(train, val, test) < 0:
        fail("--train, --val and --test must be ≥ 0")
    if train + val + test == 0:
        fail("--train, --val and --test are all 0: the dataset would hold no sample")
    if horizon < 1 or train_horizon < 1:
        fail("--horizon and --train-horizon must be ≥ 1")
    t0 = time.perf_counter()
    with input_errors(), err.status(f"simulating {train + val + test} N-body systems…"):
        path = ingest_nbody(out_dir, n_train=train, n_val=val, n_test=test, seed=seed,
                            stream_train=max(stream_train, train), horizon=horizon, train_horizon=train_horizon,
                            overwrite=overwrite)
    report_dataset(path, t0, json_out)


@ingest_app.command("mcomplex")
@friendly
def ingest_mcomplex_cmd(
    out_dir: Path = NEW_DATASET,
    complexes: int = typer.Option(3, help="M: complexes per system."),
    size: int = typer.Option(3, help="N/M: average complex size a (sizes drawn from {2 … 2a−2})."),
    systems: int = typer.Option(1, help="J: number of system types (1 = single system, 5 = multiple)."),
    train: int = typer.Option(1000, help="Training systems (paper: 1000)."),
    val: int = typer.Option(2000, help="Validation systems."),
    test: int = typer.Option(2000, help="Test systems."),
    seed: int = typer.Option(43, help="Seed (system types follow the official generator for the same seed)."),
    horizon: int = typer.Option(20, help="Model steps (Δ = 15 frames) the validation and test systems are continued "
                                "after the input frame, from their exact state at frame 49 and without the velocity "
                                "test: references for rollouts; the systems, frames 0–49 and samples stay the "
                                "paper's."),
    train_horizon: int = typer.Option(1, help="The same for the training systems (≥ the recipe's "
                                      "train.rollout_steps to train on rollouts)."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_OUT,
):
    """Simulate the M-complex system (EGHN paper, Table 1) and write the dataset (frames 10 → 25)."""
    check_output(out_dir, overwrite)
    from ..data.ingest import ingest_mcomplex

    if min(train, val, test) < 0 or min(complexes, size, systems) < 1:
        fail("--complexes, --size and --systems must be ≥ 1 and the split sizes ≥ 0")
    if train + val + test == 0:
        fail("--train, --val and --test are all 0: the dataset would hold no sample")
    if horizon < 1 or train_horizon < 1:
        fail("--horizon and --train-horizon must be ≥ 1")
    t0 = time.perf_counter()
    with input_errors(), err.status(f"simulating {train + val + test} M-complex systems…"):
        path = ingest_mcomplex(out_dir, n_complexes=complexes, avg_size=size, n_types=systems, n_train=train,
                               n_val=val, n_test=test, seed=seed, horizon=horizon, train_horizon=train_horizon,
                               overwrite=overwrite)
    report_dataset(path, t0, json_out)


@ingest_app.command("mocap")
@friendly
def ingest_mocap_cmd(
    out_dir: Path = NEW_DATASET,
    more_amc: list[Path] = typer.Argument(None, metavar="[B.amc …]", show_default=False,
                                          help="Further AMC trials after --amc (so that `--amc dir/*.amc` works)."),
    asf: Path = typer.Option(None, help="The subject's ASF skeleton (with --amc)."),
    amc: list[Path] = typer.Option(None, help="AMC trial(s) of that skeleton, one trajectory each (trial name = "
                                   "file stem); repeat the option or list the files after it."),
    positions: Path = typer.Option(None, help="Joint positions already computed instead of --asf/--amc: .npz with "
                                   "trial_00 … [T, J, 3], edges [J-1, 2] and the published split_* arrays."),
    delta: int = typer.Option(30, help="Gap Δ in frames between input and target (paper: 30 at 120 Hz = 0.25 s; "
                              "use 8 for the 30 Hz subject-35 walks)."),
    split: str = typer.Option(None, help="Trial-disjoint split: a JSON file {\"train\": {\"trials\": [...], "
                              "\"starts\": [[...], ...] | null}, \"val\": …, \"test\": …} (trial ids: indices or "
                              "names) or 'walk30'. Default: the .npz's published split; for AMC trials WALK30 when "
                              "they are the 23 subject-35 walks, else a seeded 11:6:6 split of the trials."),
    fps: float = typer.Option(120.0, help="Frame rate of the trials (CMU: 120; the 30 Hz subject-35 copy: 30). "
                              "The dataset's time unit is one frame; v = x(t+1) − x(t) per frame."),
    height: bool = typer.Option(True, "--height/--no-height", help="Node features [‖v‖, y / max train height] "
                                "(EGHN; only rotations about y and horizontal shifts stay symmetries) or "
                                "[‖v‖, 1] (GMN; full E(3))."),
    cap: bool = typer.Option(True, "--cap/--no-cap", help="Keep at most ⌊3000 | 600 | 600 / trials⌋ starts per "
                             "train | val | test trial, as the EGHN trainer (Run: 400 / 240 / 240 samples)."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_OUT,
):
    """Turn CMU motion capture (ASF + AMC trials, or joint positions in an .npz) into a dataset for the
    GMN/EGHN Walk/Run protocol: static 2-hop skeleton graph, forward-difference velocities, Δ = 30 frames."""
    check_output(out_dir, overwrite)
    from ..data.ingest.mocap import EGHN_MAX_SAMPLES, ingest_mocap_amc, ingest_mocap_positions, load_split

    amc_files = list(amc or []) + list(more_amc or [])
    if positions is not None and (asf is not None or amc_files):
        fail("give either --positions FILE.npz or --asf with --amc trials, not both")
    if positions is None and (asf is None or not amc_files):
        fail("give --asf SKELETON.asf with at least one --amc TRIAL.amc (or --positions FILE.npz)")
    if delta < 1 or fps <= 0:
        fail("--delta must be ≥ 1 frame and --fps positive")
    for f in [positions] if positions is not None else [asf, *amc_files]:
        if not f.is_file():
            fail(f"{f} does not exist")
    with input_errors():
        split_dict = load_split(split) if split is not None else None
        caps = EGHN_MAX_SAMPLES if cap else None
        t0 = time.perf_counter()
        if positions is not None:
            with err.status(f"reading joint positions from {positions.name}…"):
                path = ingest_mocap_positions(out_dir, positions, delta=delta, split_from_file=split_dict is None,
                                              split=split_dict, height_feature=height, fps=fps, max_samples=caps,
                                              overwrite=overwrite)
        else:
            with err.status(f"forward kinematics of {len(amc_files)} trials…"):
                path = ingest_mocap_amc(out_dir, asf, amc_files, delta=delta, split=split_dict,
                                        height_feature=height, fps=fps, max_samples=caps, overwrite=overwrite)
    report_dataset(path, t0, json_out)


@ingest_app.command("ase")
@friendly
def ingest_ase_cmd(
    out_dir: Path = NEW_DATASET,
    files: list[Path] = typer.Argument(..., help="Files ASE reads (.traj, extended XYZ, OUTCAR, …) whose frames carry "
                                       "energies and forces; periodic cells are kept."),
    cutoff: float = typer.Option(5.0, help="Neighbour cutoff in Å of the potential (cells of any size work)."),
    val_fraction: float = typer.Option(0.1, help="Fraction of frames for validation (seeded random frame split)."),
    test_fraction: float = typer.Option(0.1, help="Fraction of frames for the test split."),
    seed: int = typer.Option(0, help="Seed of the frame split."),
    index: str = typer.Option(":", help="Frames to read from each file, ASE slice syntax (':' all, '-1', '::10')."),
    energy_key: str = typer.Option("energy", help="Energy to learn: energy, free_energy, or an atoms.info key."),
    forces_key: str = typer.Option("forces", help="Forces to learn: forces, or an atoms.arrays key."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_OUT,
):
    """Read frames with energies and forces (eV, Å) with ASE and write a dataset for learned potentials."""
    check_output(out_dir, overwrite)
    from ..data.ingest import ingest_ase

    t0 = time.perf_counter()
    with input_errors(), err.status(f"reading {len(files)} file(s) with ASE…"):
        path = ingest_ase(out_dir, files, cutoff=cutoff, val_fraction=val_fraction, test_fraction=test_fraction,
                          seed=seed, index=index, energy_key=energy_key, forces_key=forces_key, overwrite=overwrite)
    report_dataset(path, t0, json_out)


@ingest_app.command("md")
@friendly
def ingest_md_cmd(
    out_dir: Path = NEW_DATASET,
    top: Path = typer.Option(..., help="Topology MDAnalysis reads (PSF, TPR, PRMTOP, PDB, GRO, …)."),
    traj: list[Path] = typer.Option(..., help="Trajectory (DCD, XTC, TRR, NetCDF, PDB, …); repeat for several runs "
                                    "of the same system (no sample straddles two files)."),
    select: str = typer.Option("backbone", help="MDAnalysis selection of the atoms to model."),
    delta: int = typer.Option(15, help="Δ in saved frames between input and target (EGHN AdK: 15 = 3.6 ns)."),
    cutoff: float = typer.Option(10.0, help="Global-graph cutoff in Å (rebuilt for every state)."),
    smooth_cutoff: float = typer.Option(2.0, help="Width in Å over which an edge's messages fade to 0 at the "
                                        "cutoff, so a rollout step is continuous as atoms cross it; 0 = hard."),
    velocities: str = typer.Option("auto", help="auto (the trajectory's own when they describe its motion over a "
                                   "frame, else the backward difference), trajectory, difference, or lag (the "
                                   "displacement over one model step per frame); stored in Å per frame."),
    align: bool = typer.Option(False, "--align/--no-align", help="Superpose every frame on the first one (removes "
                               "the rigid-body diffusion of a small molecule; the model learns internal motion)."),
    dt: float = typer.Option(None, help="ps between saved frames, for trajectories that do not state it (Amber "
                             "NetCDF with zero times, PDB, XYZ, mdcrd) or state it in unknown units (LAMMPS DCD is "
                             "read as 'units real', fs); default: the trajectory's frame times."),
    split: str = typer.Option("0.6,0.2,0.2", help="Chronological train,val,test fractions of each trajectory."),
    test_traj: list[Path] = typer.Option(None, help="Trajectory held out whole as test data (repeatable); then "
                                         "--split may give the other trajectories a test fraction of 0."),
    time_reversal: bool = typer.Option(False, "--time-reversal/--no-time-reversal", help="Also train on each "
                                       "trajectory's training span played backwards (validation and test stay "
                                       "forward): for a driven transition, so that rollouts do not inherit the "
                                       "drive."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_OUT,
):
    """Any MD trajectory MDAnalysis reads → dataset: one atom selection, bonds as local edges, atoms within the
    cutoff as global edges, chronological split without leakage across its boundaries. In a periodic box the
    selection's molecules are made whole and the frames unwrapped in time."""
    check_output(out_dir, overwrite)
    from ..data.ingest import ingest_md

    t0 = time.perf_counter()
    with input_errors(), err.status(f"reading {len(traj)} trajectory file(s) with MDAnalysis…"):
        path = ingest_md(out_dir, top, traj, select=select, delta=delta, cutoff=cutoff, smooth_cutoff=smooth_cutoff,
                         velocities=velocities,
                         ratios=parse_ratios(split), test_trajs=test_traj or [], dt=dt, align=align,
                         time_reversal=time_reversal, overwrite=overwrite,
                         warn=warn)
    report_dataset(path, t0, json_out)


@ingest_app.command("adk")
@friendly
def ingest_adk_cmd(
    out_dir: Path = NEW_DATASET,
    source: str = typer.Option("equilibrium", help="equilibrium: MDAnalysisData's adk_equilibrium (downloaded once, "
                               "the EGHN paper's data); embedded: the AdK DIMS trajectories of MDAnalysisTests "
                               "(offline)."),
    select: str = typer.Option("backbone", help="MDAnalysis selection (EGHN paper: backbone)."),
    delta: int = typer.Option(None, help="Δ in frames \\[default: 15 (3.6 ns) for equilibrium, 5 for embedded]."),
    velocities: str = typer.Option("auto", help="auto, difference or lag (the displacement over Δ frames), as for "
                                   "`ingest md`."),
    cutoff: float = typer.Option(10.0, help="Global-graph cutoff in Å (EGHN paper: 10)."),
    smooth_cutoff: float = typer.Option(None, help="Width in Å over which an edge's messages fade to 0 at the "
                                        "cutoff (0 = hard) \\[default: 0, the paper's, for equilibrium; 2 for "
                                        "embedded]."),
    data_home: Path = typer.Option(None, help="Where MDAnalysisData keeps its downloads \\[~/MDAnalysis_data]."),
    time_reversal: bool = typer.Option(None, "--time-reversal/--no-time-reversal", help="Also train on the "
                                       "training span played backwards \\[default: on for embedded (a driven "
                                       "transition), off for equilibrium]."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_OUT,
):
    """Adenylate kinase: the EGHN paper's AdK equilibrium trajectory, or the AdK data shipped with MDAnalysisTests."""
    check_output(out_dir, overwrite)
    from ..data.ingest import ingest_adk

    t0 = time.perf_counter()
    status = "fetching adk_equilibrium with MDAnalysisData (once) and reading it…" if source == "equilibrium" else \
        "reading the AdK trajectories of MDAnalysisTests…"
    with input_errors(), err.status(status):
        path = ingest_adk(out_dir, source=source, select=select, delta=delta, cutoff=cutoff,
                          smooth_cutoff=smooth_cutoff, velocities=velocities,
                          data_home=data_home, time_reversal=time_reversal,
                          overwrite=overwrite, warn=warn)
    report_dataset(path, t0, json_out)


def check_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse an unusable output before any work (an existing one without --overwrite, one below a file)."""
    from ..data.dataset import DatasetError, check_new_dataset

    try:
        check_new_dataset(out_dir, overwrite)
    except DatasetError as exc:
        fail(str(exc).replace("pass overwrite=True", "pass --overwrite"))


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        fail(f"--split must be three non-negative fractions that sum to 1, like 0.6,0.2,0.2 (got {text!r})")
    return parts


@ingest_app.command("emt")
@friendly
def ingest_emt_cmd(
    out_dir: Path = NEW_DATASET,
    system: str = typer.Option("bulk", help="bulk (periodic cubic fcc cell, SIZE³ repeats: 4·SIZE³ atoms) or "
                               "cluster (free cuboctahedron with SIZE shells: 13, 55, 147 … atoms)."),
    element: str = typer.Option("Cu", help="An fcc metal EMT knows: Cu, Ag, Au, Ni, Pd, Pt, Al."),
    size: int = typer.Option(None, help="Default 3 for bulk (108 atoms), 2 for cluster (55 atoms)."),
    temperatures: str = typer.Option("300,400,500,600,700,800", help="Comma-separated temperatures in K; each "
                                     "is equilibrated, then sampled."),
    frames_per_temperature: int = typer.Option(40, help="Frames stored per temperature."),
    stride: int = typer.Option(10, help="MD steps between stored frames."),
    timestep: float = typer.Option(2.0, help="MD time step in fs."),
    friction: float = typer.Option(0.02, help="Langevin friction in 1/fs."),
    equilibrate: int = typer.Option(100, help="MD steps at each temperature before sampling."),
    seed: int = typer.Option(0, help="Seed of the MD (velocities, thermostat noise) and of the frame split."),
    frames: Path = typer.Option(None, help="Also keep the simulated frames in this file (.xyz extended XYZ or "
                                ".traj), e.g. to merge bulk and cluster frames with `ingest ase`."),
    cutoff: float = typer.Option(5.0, help="Neighbour cutoff in Å of the potential."),
    val_fraction: float = typer.Option(0.1, help="Fraction of frames for validation (seeded random frame split)."),
    test_fraction: float = typer.Option(0.1, help="Fraction of frames for the test split."),
    overwrite: bool = OVERWRITE,
    json_out: bool = JSON_OUT,
):
    """Reference data from ASE's EMT: seeded Langevin MD of an fcc metal (periodic cell or cluster) at several
    temperatures, written as a potential dataset (energies in eV, forces in eV/Å) for `mdsurrogate train`."""
    check_output(out_dir, overwrite)
    from ..data.ingest import ingest_emt

    try:
        temps = [float(t) for t in temperatures.split(",") if t.strip()]
    except ValueError:
        fail(f"--temperatures must be comma-separated numbers in K, not {temperatures!r}")
    t0 = time.perf_counter()
    with input_errors(), err.status(f"EMT molecular dynamics of {element} ({system})…"):
        path = ingest_emt(out_dir, system=system, element=element, size=size, temperatures=temps,
                          frames_per_temperature=frames_per_temperature, stride=stride, timestep_fs=timestep,
                          friction=friction, equilibrate=equilibrate, seed=seed, frames_file=frames, cutoff=cutoff,
                          val_fraction=val_fraction, test_fraction=test_fraction, overwrite=overwrite)
    report_dataset(path, t0, json_out)


def report_dataset(path: Path, t0: float, json_out: bool) -> None:
    from ..data.dataset import Dataset

    summary = Dataset(path).describe() | {"seconds": round(time.perf_counter() - t0, 2)}
    n = summary["samples"]
    err.print(f"[green]wrote[/] {path}: {n['train']} train / {n['val']} val / {n['test']} test samples "
              f"({summary['seconds']} s)")
    if json_out:
        emit_json(summary)

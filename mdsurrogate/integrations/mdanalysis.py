"""MDAnalysis integration: surrogate trajectories (``.mdsr`` files) as just another trajectory format.

Importing this module (or :mod:`mdsurrogate.mda`, which re-exports it) registers, by MDAnalysis's format registry:

* ``MDSRReader`` — a coordinate reader for format ``"MDSR"``: frames are computed on demand by the model the file
  names (see :mod:`mdsurrogate.simulation.mdsr`), with random access and slicing that agree with sequential reading;
* ``MDSRParser`` — a topology parser for format ``"MDSR"``, built from the atom names, residues, chains,
  elements and bonds stored in the file.

Spellings that work::

    import MDAnalysis as mda
    import mdsurrogate.mda                                  # registers the MDSR format (needed once)

    u = mda.Universe("run.mdsr")                            # topology and trajectory from the one file
    u = mda.Universe("adk_backbone.pdb", "run.mdsr")        # any topology with the same atoms, in the same order
    u = mda.Universe("run.mdsr", device="cuda", stride=4)   # where frames are computed; states kept for random access
    u = mda.Universe(read_mdsr("run.mdsr"))                 # an opened MdsrRun (mdsurrogate.simulation.mdsr.read_mdsr)
    u = mda.Universe("top.pdb", "run.bin", format="MDSR")   # a file without the .mdsr suffix

    u.trajectory[57]; u.trajectory[2:90:4]; u.trajectory[::-1]     # random access, slices, reverse
    rms.RMSD(u, select="name CA").run(); rms.RMSF(u.select_atoms("name CA")).run()

A ``.mdsr`` file is one file: do not pass it inside a list with other files. MDAnalysis hands any list (and any
object with ``__len__`` or ``next``) to its ChainReader; an :class:`~mdsurrogate.simulation.mdsr.MdsrRun` has neither on
purpose, so it is recognised as one MDSR trajectory. Chaining ``.mdsr`` files (``Universe(top, ["a.mdsr",
"b.mdsr"])``) works through the ChainReader like any other format.

Units: time in ps (``t0``, ``dt`` stored in the file), positions in Å and velocities in Å/ps, MDAnalysis's own
units, so nothing is converted (models trained on MD datasets use exactly these; dimensionless models are read
as if their units were Å and ps). Frames have no unit cell (``ts.dimensions is None``). There is no MDSR writer:
write a ``.mdsr`` with ``mdsurrogate rollout … --out run.mdsr`` or :func:`mdsurrogate.simulation.mdsr.write_mdsr`.

Pickling (multiprocessing analyses) sends the file name and the current frame, not the model; the receiving
process opens the file again.
"""

from __future__ import annotations

try:
    from MDAnalysis.coordinates.base import ReaderBase
    from MDAnalysis.lib.util import store_init_arguments
    from MDAnalysis.topology.base import TopologyReaderBase
except ImportError as exc:  # pragma: no cover - MDAnalysis is an optional dependency of the core
    raise ImportError("mdsurrogate.integrations.mdanalysis needs MDAnalysis: pip install MDAnalysis") from exc

from ..data.atoms import mdanalysis_topology
from ..simulation.mdsr import DEFAULT_STRIDE, MdsrRun, read_mdsr

__all__ = ["MDSRParser", "MDSRReader", "topology_from_atoms"]


#: an MDAnalysis Topology from an AtomTopology (kept under this name for users of mdsurrogate.mda)
topology_from_atoms = mdanalysis_topology


class MDSRParser(TopologyReaderBase):
    """Topology of a ``.mdsr`` file (format ``MDSR``): the per-atom identity stored in it. The checkpoint is
    neither needed nor loaded for this."""

    format = "MDSR"

    @staticmethod
    def _format_hint(thing):
        """An opened :class:`MdsrRun` can be passed to ``Universe`` directly."""
        return isinstance(thing, MdsrRun)

    def parse(self, **kwargs):
        run = self.filename if isinstance(self.filename, MdsrRun) else read_mdsr(self.filename, load_model=False)
        return topology_from_atoms(run.atoms)


class MDSRReader(ReaderBase):
    """Frames of a ``.mdsr`` surrogate trajectory, computed on demand by its model (format ``MDSR``).

    Args:
        filename: a ``.mdsr`` file, or an opened :class:`MdsrRun`.
        device: where frames are computed (default: the device stored in the file).
        stride: keep every ``stride``-th state met along the chain for random access (1 keeps all).
        dt, time_offset: override the stored time step and start time (ps), as for other readers.

    ``n_frames`` is the stored frame count (the initial state included); frame k is the state after k model
    steps, at ``t0 + k·dt`` ps. Positions and velocities come with every frame; there is no unit cell.
    Opening checks that the checkpoint exists and is unchanged (SHA-256) and raises
    :class:`~mdsurrogate.simulation.mdsr.MdsrError` (a ``ValueError``) otherwise; a frame the model cannot produce
    (non-finite or blown-up geometry) raises it too, naming the frame.
    """

    format = "MDSR"
    units = {"time": "ps", "length": "Angstrom", "velocity": "Angstrom/ps"}

    @staticmethod
    def _format_hint(thing):
        """An opened :class:`MdsrRun` can be passed to ``Universe`` directly."""
        return isinstance(thing, MdsrRun)

    @classmethod
    def parse_n_atoms(cls, filename, **kwargs):
        run = filename if isinstance(filename, MdsrRun) else read_mdsr(filename, load_model=False)
        return run.n_atoms

    @store_init_arguments
    def __init__(self, filename, convert_units=True, n_atoms=None, device=None, stride=DEFAULT_STRIDE, **kwargs):
        given = filename if isinstance(filename, MdsrRun) else None
        super().__init__(given.path if given is not None else filename, convert_units=convert_units, **kwargs)
        self._open_args = {"device": device, "stride": stride}
        self._run = given if given is not None else read_mdsr(self.filename, device=device, stride=stride)
        self.n_atoms = self._run.n_atoms
        self.n_frames = self._run.n_frames
        self._ts_kwargs.setdefault("dt", self._run.dt_ps)
        self._ts_kwargs.setdefault("time_offset", self._run.t0_ps)
        self.ts = self._Timestep(self.n_atoms, velocities=True, **self._ts_kwargs)
        self._read_frame(0)

    @property
    def run(self) -> MdsrRun:
        """The opened ``.mdsr`` file (opened again after unpickling)."""
        if self._run is None:
            self._run = read_mdsr(self.filename, **self._open_args)
        return self._run

    def _fill(self, ts, k: int):
        fr = self.run.frame(k)
        ts.frame = k
        ts.positions = fr.positions
        ts.velocities = fr.velocities
        return ts

    def _read_frame(self, frame):
        return self._fill(self.ts, frame)

    def _read_next_timestep(self, ts=None):
        if ts is None:
            ts = self.ts
        k = self.ts.frame + 1
        if k >= self.n_frames:
            raise EOFError("end of the .mdsr trajectory")
        return self._fill(ts, k)

    def _reopen(self):
        self.ts.frame = -1

    def close(self):
        """Drop the model and the kept states (rebuilt on demand if the reader is used again)."""
        run = getattr(self, "_run", None)
        if run is not None:
            run.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_run"] = None
        return state

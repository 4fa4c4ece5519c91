"""mdsurrogate: learned E(n)-equivariant surrogates of particle and molecular simulations.

The pipeline is ``source --ingest--> dataset --sample--> graph batch --> propagator --> next state``;
rollouts chain propagator steps and write PDB / XYZ / DCD. MDAnalysis and ASE are imported lazily,
only by the parts that need them, so the core (data, models, training, rollout) runs without them.
"""

__version__ = "0.1.0"

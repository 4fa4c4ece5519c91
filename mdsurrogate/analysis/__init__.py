"""Analysis of trajectories as plain NumPy arrays: rollout fidelity, null models, structural observables."""

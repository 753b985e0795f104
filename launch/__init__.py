"""The ``evo`` command line and the launchers (local processes, SLURM, Kubernetes)."""

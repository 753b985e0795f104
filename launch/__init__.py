"""The ``evo`` command line and the launchers (local processes, SLURM, Kubernetes).

Layers, each importing only the ones below it:

- ``cli.py``: the ``evo`` command; it imports one module of ``commands/`` per subcommand.
- ``api.py``: the Python API (``evo.open``, ``evo.init``, ``evo.launch``; ``evo`` re-exports it
  lazily), beside ``cli.py``: both are thin shells over the functions of ``commands/`` and
  ``views/``. It lives here, not in ``evo/``, because it needs the commands' code and
  ``launch`` imports ``evo`` (``evo/__init__.py`` imports it only when a name is asked for).
- ``commands/``: one module per subcommand (``evo launch slurm|k8s``: ``launch_slurm.py``,
  ``launch_k8s.py``) and the helpers only one command uses.
- ``clusters/``: what runs on or asks a scheduler: SLURM array tasks through submitit, the
  wait for them, ``squeue``, the Kubernetes manifest.
- ``views/``: reading a run for people: the snapshot, status and lineage as data, the
  report's data and HTML, figures, drawings, progress lines.
- ``export.py`` (the torch-only model directory), ``processes.py`` (local child processes),
  ``errors.py``, ``options.py`` and ``logs.py``: what the layers above share.
"""

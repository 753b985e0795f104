"""evo's benchmark suite: ``python -m bench NAME [--mode small|full] [--device ...] [--out DIR]``.

- ``overhead``: per-child time breakdown of a real run, and the coordination overhead.
- ``train_speed``: img/s of fixed evolved architectures, evo's trainer vs a naive eager loop.
- ``packing``: children/hour with K workers sharing one GPU.
- ``search``: evolution (pairwise, aging) vs random search at equal budget.
- ``storage``: the population store's individuals/s against worker count (no training).

Each writes JSON plus a markdown table (machine, versions, settings, results) under
``bench/results/``. ``small`` modes are CI-sized and run on a CPU; ``full`` modes are the
numbers the README quotes.
"""

BENCHMARKS = ("overhead", "train_speed", "packing", "search", "storage")

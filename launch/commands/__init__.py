"""One module per ``evo`` subcommand (``launch.cli`` imports them by name), each with
``register(subparsers)``, and the helpers that only one command uses (``presets``,
``init_data``: `evo init`; ``retrain_requests``: `evo retrain`)."""

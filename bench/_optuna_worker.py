"""One Optuna worker process for ``bench storage --compare optuna``.

    python -m bench._optuna_worker JOURNAL STUDY SEED READY_FILE

Loads the study from Optuna's journal file storage (``JournalFileBackend``, its default
symlink lock), then runs ``study.optimize`` with the Random sampler on a zero-cost objective
(Optuna's quickstart: minimise (x - 2)^2 over one float) until SIGTERM. After its first
completed trial it creates READY_FILE, so the harness knows it is running. Not imported by
anything else: optuna is imported only in this process.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the worker (see the module docstring); exit 0 on SIGTERM."""
    journal, study_name, seed, ready = argv[0], argv[1], int(argv[2]), Path(argv[3])
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)

    storage = JournalStorage(JournalFileBackend(journal))
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=optuna.samplers.RandomSampler(seed=seed))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10.0, 10.0)
        return (x - 2.0) ** 2

    def first_done(study, trial) -> None:
        if not ready.exists():
            ready.touch()

    try:
        study.optimize(objective, callbacks=[first_done])
    except SystemExit:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

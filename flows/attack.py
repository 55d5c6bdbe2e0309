"""``python -m flows.attack``: the entry point of :mod:`flows.cli.attack` (same options).

The experiment itself is :mod:`flows.attacks.experiment`; its names that callers import from here
(``paper_figures``, the notebooks) stay importable: :class:`AttackConfig`, :func:`run_experiment`,
:class:`ExperimentError`, :func:`load_test_set`, :data:`ATTACKS`, and :data:`PAPER_EPS`
(:mod:`flows.paper`).
"""

from flows.attacks.experiment import (
    ATTACKS,
    AttackConfig,
    ExperimentError,
    load_test_set,
    run_experiment,
)
from flows.cli.attack import main
from flows.paper import PAPER_EPS

__all__ = [
    "ATTACKS",
    "PAPER_EPS",
    "AttackConfig",
    "ExperimentError",
    "load_test_set",
    "main",
    "run_experiment",
]

if __name__ == "__main__":
    main()

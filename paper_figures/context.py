"""Where the Section 6 items find their inputs and how large they run: one explicit, frozen object.

Every data item's ``default_config`` and ``compute``, and every loader of :mod:`paper_figures.trained`,
takes a :class:`Context` argument; nothing in the package reads or writes the environment. The
environment supplies defaults only at the edges: :meth:`Context.from_environment` (called by the
command line, the notebooks and the tests) reads

* ``CGM_DATA_ROOT``: the folder holding ``MNIST/`` (torchvision layout) and ``cifar10-jpeg/``
  (ImageFolder layout);
* ``CGM_RUNS_ROOT``: the trained runs (default: the committed :data:`RUNS_ROOT`);
* ``CGM_QUICK``: ``1``/``true``/``yes`` for small sample sizes (the test suite and the notebooks'
  quick re-execution); every output records whether it was quick.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATA_ROOT_ENV",
    "QUICK_ENV",
    "RUNS_ROOT",
    "RUNS_ROOT_ENV",
    "Context",
    "DataRootError",
]

#: The committed trained runs (``artifacts/runs``).
RUNS_ROOT = Path(__file__).resolve().parent.parent / "artifacts" / "runs"
DATA_ROOT_ENV = "CGM_DATA_ROOT"
RUNS_ROOT_ENV = "CGM_RUNS_ROOT"
QUICK_ENV = "CGM_QUICK"
_TRUE = frozenset({"1", "true", "yes"})


class DataRootError(FileNotFoundError):
    """The context names no data root, or one that is not a folder."""


@dataclass(frozen=True)
class Context:
    """Where the data and the trained runs are, and whether to use small sample sizes.

    Attributes:
        data_root: folder holding ``MNIST/`` and ``cifar10-jpeg/``; None where no item needs data
            (:meth:`require_data_root` says so when one does).
        runs_root: folder of the run folders ``cpu-{mnist,cifar}-...`` (default: the committed
            :data:`RUNS_ROOT`; ``python -m paper_figures --retrain`` passes its ``--runs-dir``).
        quick: small sample sizes, so the tests and notebooks re-execute in minutes.
    """

    data_root: Path | None = None
    runs_root: Path = RUNS_ROOT
    quick: bool = False

    def __post_init__(self) -> None:
        if self.data_root is not None:
            object.__setattr__(self, "data_root", Path(self.data_root).expanduser())
        object.__setattr__(self, "runs_root", Path(self.runs_root).expanduser())
        if not isinstance(self.quick, bool):
            raise TypeError(f"quick must be a bool, got {self.quick!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Context:
        """The context that ``CGM_DATA_ROOT``, ``CGM_RUNS_ROOT`` and ``CGM_QUICK`` describe.

        ``environ``: the mapping to read (default :data:`os.environ`); unset or empty variables
        leave the defaults (no data root, the committed runs, full mode).
        """
        env = os.environ if environ is None else environ
        return cls(
            data_root=env.get(DATA_ROOT_ENV) or None,
            runs_root=env.get(RUNS_ROOT_ENV) or RUNS_ROOT,
            quick=env.get(QUICK_ENV, "").strip().lower() in _TRUE,
        )

    def require_data_root(self) -> Path:
        """:attr:`data_root`, or a :class:`DataRootError` saying how to give one."""
        if self.data_root is None:
            raise DataRootError(
                f"no data root: pass Context(data_root=...) (--data-root) or set {DATA_ROOT_ENV} "
                "to the folder holding MNIST/ (torchvision layout) and cifar10-jpeg/ (ImageFolder "
                "layout)"
            )
        if not self.data_root.is_dir():
            raise DataRootError(f"data root {str(self.data_root)!r} is not a folder")
        return self.data_root

"""The paper's training settings: one registry of (prior family, training objective).

Section 6.1 compares *Base* (a Gaussian per class, trained on the joint likelihood, eq. 5),
*Reweight* (the same prior, with the classification term up-weighted, eq. 6) and *Split* (the
split prior of Section 5.3 with its own classification term). Appendix B adds heavier-tailed
priors trained like *Reweight*. A variant names both halves, so "reweight" never selects a
prior: its prior is the Gaussian, its objective the reweighted one.

Example::

    >>> VARIANTS["reweight"].prior, VARIANTS["reweight"].objective
    ('gaussian', 'reweighted')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VARIANTS", "Variant", "get_variant"]


@dataclass(frozen=True)
class Variant:
    """A training setting: ``prior`` family (:mod:`flows.priors`), ``objective``
    (:mod:`flows.objectives`), and where the paper defines it."""

    name: str
    prior: str
    objective: str
    paper: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("base", "gaussian", "nll", "Section 6.1 (Base), eq. 5"),
        Variant("reweight", "gaussian", "reweighted", "Sections 5.1 and 6.1 (Reweight), eq. 6"),
        Variant("split", "split", "split", "Section 5.3 (Split prior)"),
        Variant("laplace", "laplace", "reweighted", "Appendix B"),
        Variant("cauchy", "cauchy", "reweighted", "Appendix B"),
        Variant("gaussian-laplace", "gaussian-laplace", "reweighted", "Appendix B"),
    )
}


def get_variant(name: str) -> Variant:
    """The variant called ``name`` (``ValueError`` listing the valid names otherwise)."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {name!r}") from None

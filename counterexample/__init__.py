"""The counterexample of Section 3 and Appendix C, computed exactly.

>>> import counterexample
>>> counterexample.find_dimension(0.1, 0.01, 0.1)
149
>>> ce = counterexample.Counterexample.from_targets(eps=0.1, delta=0.01, Delta=0.1)
>>> ce.d, round(ce.kl_q_p_joint(), 6) < 0.1
(149, True)
"""

from .construction import Counterexample
from .dimension import (
    LambdaInterval,
    feasible_lambda1_interval,
    find_dimension,
    find_dimension_eq19,
    is_feasible,
    leading_order_dimension,
    paper_dimension_expression,
)
from .montecarlo import (
    AttackSimulation,
    MonteCarloEstimate,
    monte_carlo_kl,
    sample_annulus_norms,
    sample_annulus_points,
    sample_norms,
    sample_points,
    simulate_attack,
)
from .proposition import PropositionReport, check_proposition

__all__ = [
    "Counterexample",
    "LambdaInterval",
    "feasible_lambda1_interval",
    "find_dimension",
    "find_dimension_eq19",
    "is_feasible",
    "leading_order_dimension",
    "paper_dimension_expression",
    "AttackSimulation",
    "MonteCarloEstimate",
    "monte_carlo_kl",
    "sample_annulus_norms",
    "sample_annulus_points",
    "sample_norms",
    "sample_points",
    "simulate_attack",
    "PropositionReport",
    "check_proposition",
]

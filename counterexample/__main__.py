"""``python -m counterexample --eps 0.1 --delta 0.01 --Delta 0.1``: the whole of Proposition 1 at a glance.

Prints the minimal dimension (beside eq. (19)'s and the paper's asymptotic expression), the feasible
lambda1 interval, both KL divergences with the lemma bounds, and the Proposition 1 report; with
``--monte-carlo N`` also Monte Carlo estimates and the simulated attack.
"""

from __future__ import annotations

import argparse
import sys
import time

from .construction import Counterexample
from .dimension import (
    feasible_lambda1_interval,
    find_dimension,
    find_dimension_eq19,
    leading_order_dimension,
    paper_dimension_expression,
    validate_targets,
)
from .montecarlo import monte_carlo_kl, simulate_attack
from .proposition import check_proposition


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m counterexample",
        description="Exact minimal dimension, KL divergences and the Proposition 1 report for the "
        "annulus counterexample of 'Conditional Generative Models are not Robust' (Appendix C).",
    )
    p.add_argument("--eps", type=float, default=0.1, help="KL budget eps > 0 (default 0.1)")
    p.add_argument("--delta", type=float, default=0.01, help="confidence 0 < delta < 1/2 (default 0.01)")
    p.add_argument("--Delta", type=float, default=0.1, help="perturbation radius Delta > 0 (default 0.1)")
    p.add_argument("--d", type=int, default=None, help="dimension (default: the minimal one)")
    p.add_argument("--lambda1", type=float, default=None,
                   help="lambda1 (default: geometric midpoint of the feasible interval)")
    p.add_argument("--monte-carlo", type=int, default=0, metavar="N",
                   help="also run Monte Carlo checks with N samples (norm samplers; any d)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo checks (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        eps, delta, Delta = validate_targets(args.eps, args.delta, args.Delta)
        t0 = time.perf_counter()
        d_min = find_dimension(eps, delta, Delta)
        elapsed = time.perf_counter() - t0
        ce = Counterexample.from_targets(eps, delta, Delta, d=args.d, lambda1=args.lambda1)
    except (TypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"eps={eps:g}  delta={delta:g}  Delta={Delta:g}")
    print(f"minimal dimension d = {d_min}   (found in {elapsed * 1e6:.0f} us)")
    print(f"  eq. (19) alone (drops condition 3) gives d = {find_dimension_eq19(eps, delta, Delta)}")
    print(f"  leading order (2 log((1-delta)/delta) + log(1/eps)) / log(1+Delta) = "
          f"{leading_order_dimension(eps, delta, Delta):.6g}")
    print(f"  the paper's printed O~ expression (garbled, negative) = "
          f"{paper_dimension_expression(eps, delta, Delta):.6g}")
    print(f"feasible lambda1 at d={ce.d}: {feasible_lambda1_interval(ce.d, eps, delta, Delta)}")
    print(f"construction: {ce}")
    print("KL divergences (exact):")
    for name, value in ce.kl_summary().items():
        print(f"  {name:<38} {value:.6g}")
    print()
    print(check_proposition(ce, eps, delta))
    if args.monte_carlo:
        n = args.monte_carlo
        print(f"\nMonte Carlo (n={n}, seed={args.seed}):")
        for direction, exact in (("q||p", ce.kl_q_p_joint()), ("p||q", ce.kl_p_q_joint())):
            est = monte_carlo_kl(ce, direction, joint=True, n=n, rng=args.seed)
            print(f"  KL({direction}) joint: {est}  exact {exact:.6g}")
        print(f"  attack: {simulate_attack(ce, delta, n=n, rng=args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

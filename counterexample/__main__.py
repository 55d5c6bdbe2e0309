"""``python -m counterexample --eps 0.1 --delta 0.01 --Delta 0.1``: the whole of Proposition 1 at a glance.

Prints the minimal dimension (beside eq. (19)'s and the paper's asymptotic expression), the feasible
lambda1 interval, both KL divergences with the lemma bounds, and the Proposition 1 report; with
``--monte-carlo N`` also Monte Carlo estimates and the simulated attack.

Every bad argument is refused with one line on stderr, ``python -m counterexample: error: argument
--X: ...``, naming the argument and its valid range, and exit status 2 (never a traceback).

**Why ``--Delta >= 1e-15``.** The dimension search is exact for any ``Delta > 0`` (see
:func:`~counterexample.find_dimension`), but the report evaluates the densities at double-precision
radii: the shell :math:`1 < \\|x\\| \\le 1+\\Delta` holds only :math:`\\lfloor\\Delta/2^{-52}\\rfloor`
doubles (4 from 8.9e-16 to 1.1e-15, none once :math:`\\Delta \\le 2^{-53}`, where ``1 + Delta == 1``),
so below 1e-15 the attacked shell point is not represented reliably (at ``Delta = 2e-16`` it rounds
to 1.0; at ``Delta <= 1.1e-16`` the report crashed). From 1e-15 up, the report agrees with a
high-precision evaluation of the closed forms (tests/counterexample/test_cli.py). Monte Carlo is
limited further, see :func:`monte_carlo_limit`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

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

PROG = "python -m counterexample"
MIN_DELTA = 1e-15
MAX_DIMENSION = 10**300  # float(d) must stay finite; larger d cannot hold a double lambda1 anyway
MAX_MONTE_CARLO = 10**7  # about 1 GB and 10 s
MAX_SEED = 2**128 - 1
_SMALLEST_NORMAL = sys.float_info.min
_NO_DOUBLE_SEARCH = 64  # dimensions tried above d when the interval at d holds no double


class UsageError(Exception):
    """A bad argument; its message is one line that names the argument and its valid range."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and raise :class:`UsageError`."""

    def error(self, message: str):
        message = " ".join(message.split())
        if message.startswith("unrecognized arguments"):
            options = ", ".join(a.option_strings[-1] for a in self._actions if a.option_strings)
            message += f" (valid: {options})"
        elif message.startswith("argument ") and " must " not in message:
            # e.g. "expected one argument": add the valid range from the argument's help
            name = message[len("argument ") :].split(":", 1)[0]
            for action in self._actions:
                if name in ("/".join(action.option_strings), action.dest) and action.help:
                    message += f" ({action.option_strings[-1]}: {action.help})"
        raise UsageError(message)


def _real(
    low: float | None,
    high: float | None,
    *,
    low_inclusive: bool = False,
    high_inclusive: bool = False,
    why: str = "",
) -> Callable[[str], float]:
    """argparse type: a finite float in the stated interval, else a message with the range (and
    ``why``, for positive values below ``low``)."""
    lo_br, hi_br = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
    valid = f"{lo_br}{'-inf' if low is None else repr(low)}, {'inf' if high is None else repr(high)}{hi_br}"

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            x = math.nan
        too_low = low is not None and not (x > low or (low_inclusive and x == low))
        too_high = high is not None and not (x < high or (high_inclusive and x == high))
        if not math.isfinite(x) or too_low or too_high:
            reason = why if math.isfinite(x) and too_low and x > 0 else ""
            raise argparse.ArgumentTypeError(
                f"must be a finite real number in {valid}, got {_shown(text)!r}{reason}"
            )
        return x

    return parse


def _integer(low: int, high: int, *, also: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [low, high] (or equal to ``also``), else a message with the range."""
    valid = f"an integer in [{low}, {_fmt_int(high)}]"
    if also is not None:
        valid = f"{also} or {valid}"

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:  # also for more than 4300 digits
            n = None
        if n is None or not (n == also or low <= n <= high):
            raise argparse.ArgumentTypeError(f"must be {valid}, got {_shown(text)!r}")
        return n

    return parse


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _fmt_d(d: int) -> str:
    """A dimension for a message: in full up to 20 digits, else in scientific notation."""
    return str(d) if d < 10**20 else f"{float(d):.6g}"


def _fmt_int(n: int) -> str:
    if n >= 10**6:
        k = round(math.log10(n))
        if 10**k == n:
            return f"10**{k}"
        k = round(math.log2(n + 1))
        if 2**k - 1 == n:
            return f"2**{k}-1"
    return str(n)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Exact minimal dimension, KL divergences and the Proposition 1 report for the "
        "annulus counterexample of 'Conditional Generative Models are not Robust' (Appendix C).",
    )
    p.add_argument(
        "--eps", type=_real(0.0, None), default=0.1, help="KL budget eps > 0 (default 0.1)"
    )
    p.add_argument(
        "--delta",
        type=_real(0.0, 0.5),
        default=0.01,
        help="confidence 0 < delta < 1/2 (default 0.01)",
    )
    p.add_argument(
        "--Delta",
        type=_real(
            MIN_DELTA,
            None,
            low_inclusive=True,
            why=f" (the report evaluates densities at double-precision radii; below {MIN_DELTA:g} the "
            "shell 1 < r <= 1+Delta holds at most 4 of them, and none once Delta <= 1.1e-16)",
        ),
        default=0.1,
        help=f"perturbation radius Delta >= {MIN_DELTA:g} (default 0.1)",
    )
    p.add_argument(
        "--d",
        type=_integer(1, MAX_DIMENSION),
        default=None,
        help="dimension, at least the minimal one and at most 10**300 (default: the minimal one)",
    )
    p.add_argument(
        "--lambda1",
        type=_real(0.0, 1.0),
        default=None,
        help="lambda1 in the feasible interval (default: its geometric midpoint)",
    )
    p.add_argument(
        "--monte-carlo",
        type=_integer(2, MAX_MONTE_CARLO, also=0),
        default=0,
        metavar="N",
        help="also run Monte Carlo checks with N samples, 0 (off) or 2 <= N "
        f"<= {_fmt_int(MAX_MONTE_CARLO)} (norm samplers; any d)",
    )
    p.add_argument(
        "--seed",
        type=_integer(0, MAX_SEED),
        default=0,
        help="seed of the Monte Carlo checks, 0 <= seed < 2**128 (default 0)",
    )
    return p


def _construction(
    args: argparse.Namespace, eps: float, delta: float, Delta: float, d_min: int
) -> Counterexample:
    """The construction asked for, or :class:`UsageError` naming --d or --lambda1."""
    targets = f"eps={eps:g}, delta={delta:g}, Delta={Delta:g}"
    d = d_min if args.d is None else args.d
    if d < d_min:
        raise UsageError(
            f"argument --d: must be an integer >= {d_min}, the minimal dimension for {targets} (no "
            f"lambda1 satisfies Proposition 1's conditions below it), got {d}"
        )
    interval = feasible_lambda1_interval(d, eps, delta, Delta)
    if args.lambda1 is not None:
        if not interval.contains(args.lambda1):
            raise UsageError(
                f"argument --lambda1: must lie in the feasible interval {interval} at "
                f"d={_fmt_d(d)} for {targets}, got {args.lambda1!r}"
            )
        lambda1 = args.lambda1
    else:
        try:
            lambda1 = interval.geometric_midpoint()
        except ValueError as err:  # narrower than double resolution: say which d works
            better = _first_d_holding_a_double(d, eps, delta, Delta)
            hint = f"pass --d {better}" if better is not None else "pass a larger --d"
            raise UsageError(f"argument --d: {err} ({hint})") from None
    lambda2 = delta / (1.0 - delta) * lambda1
    if (
        lambda2 < _SMALLEST_NORMAL
    ):  # lambda2 (or lambda1) underflows: the construction is not representable
        problem = (
            f"lambda1={lambda1:.6g} gives lambda2 = delta/(1-delta)*lambda1 = {lambda2:.6g}, below "
            f"the smallest normal double {_SMALLEST_NORMAL:.6g}"
        )
        if args.lambda1 is not None:
            raise UsageError(
                f"argument --lambda1: at d={_fmt_d(d)} {problem}; choose --lambda1 in the feasible "
                f"interval {interval} with lambda1 >= {_SMALLEST_NORMAL * (1 - delta) / delta:.6g}"
            )
        if d == d_min or not _normal_lambda2_at(d_min, eps, delta, Delta):
            raise UsageError(
                f"argument --eps/--delta: at the minimal d={d_min} the default {problem} "
                f"(lambda1 is at most about eps): choose a larger --eps or --delta"
            )
        d_max = _largest_d_with_normal_lambda2(eps, delta, Delta, d_min, d)
        raise UsageError(
            f"argument --d: at d={_fmt_d(d)} the default {problem}; --d must be in [{d_min}, "
            f"{d_max}] for {targets}"
        )
    return Counterexample.from_targets(eps, delta, Delta, d=d, lambda1=lambda1)


def _first_d_holding_a_double(d: int, eps: float, delta: float, Delta: float) -> int | None:
    for k in range(d + 1, d + 1 + _NO_DOUBLE_SEARCH):
        try:
            feasible_lambda1_interval(k, eps, delta, Delta).geometric_midpoint()
        except ValueError:
            continue
        return k
    return None


def _normal_lambda2_at(d: int, eps: float, delta: float, Delta: float) -> bool:
    """Whether the default lambda1 at d gives a normal lambda2 (decreasing in d)."""
    try:
        mid = feasible_lambda1_interval(d, eps, delta, Delta).geometric_midpoint()
    except ValueError:
        return True  # too narrow to hold a double, which happens only just above d_min
    return delta / (1.0 - delta) * mid >= _SMALLEST_NORMAL


def _largest_d_with_normal_lambda2(eps: float, delta: float, Delta: float, lo: int, hi: int) -> int:
    """Largest d in [lo, hi) whose default lambda1 gives a normal lambda2 (bisection; monotone in d)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _normal_lambda2_at(mid, eps, delta, Delta):
            lo = mid
        else:
            hi = mid
    return lo


def monte_carlo_limit(d: int) -> int:
    r"""Largest Monte Carlo sample count whose statistical error still dwarfs the rounding bias at d.

    The samplers draw radii as doubles, whose relative spacing is at most :math:`2^{-52}`; a draw near
    a region boundary (radii 1, 1+Delta, 2, 3) can land on the wrong side, which moves a probability
    or a KL estimate by up to about :math:`d\,2^{-51}` (two spacings, in units of :math:`\log r^d`).
    At ``Delta=1e-14`` (d = 1.4e15) that is 0.6 and the simulated attack is off by 200 standard errors.
    N is limited so that this bias stays below a tenth of the standard error :math:`1/(2\sqrt N)`:
    :math:`N \le (0.05 / (d\,2^{-51}))^2`, capped at ``MAX_MONTE_CARLO``.
    """
    bias = float(d) * 2.0**-51
    return int(min(MAX_MONTE_CARLO, (0.05 / bias) ** 2))


def _check_monte_carlo(n: int, d: int) -> None:
    limit = monte_carlo_limit(d)
    if n > limit:
        valid = f"0 or an integer in [2, {limit}]" if limit >= 2 else "0"
        raise UsageError(
            f"argument --monte-carlo: must be {valid} at d={_fmt_d(d)}, got {n}: the samplers draw radii in "
            f"double precision, whose rounding can bias the estimates by up to d*2**-51 = "
            f"{float(d) * 2.0**-51:.3g}, which must stay below a tenth of the standard error"
        )


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        eps, delta, Delta = validate_targets(args.eps, args.delta, args.Delta)
        t0 = time.perf_counter()
        d_min = find_dimension(eps, delta, Delta)
        elapsed = time.perf_counter() - t0
        ce = _construction(args, eps, delta, Delta, d_min)
        _check_monte_carlo(args.monte_carlo, ce.d)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as err:  # defensive: the checks above should come first
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"eps={eps:g}  delta={delta:g}  Delta={Delta:g}")
    print(f"minimal dimension d = {d_min}   (found in {elapsed * 1e6:.0f} us)")
    print(
        f"  eq. (19) alone (drops condition 3) gives d = {find_dimension_eq19(eps, delta, Delta)}"
    )
    print(
        f"  leading order (2 log((1-delta)/delta) + log(1/eps)) / log(1+Delta) = "
        f"{leading_order_dimension(eps, delta, Delta):.6g}"
    )
    print(
        f"  the paper's printed O~ expression (garbled, negative) = "
        f"{paper_dimension_expression(eps, delta, Delta):.6g}"
    )
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

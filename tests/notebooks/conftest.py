"""Print the time of every quick notebook re-execution (its cells' time, without the kernel's
start and shutdown: :func:`~.harness.cells_seconds`) at the end of the session.

``test_notebooks.py`` records each time with ``record_property(WALL_TIME_PROPERTY, seconds)``
(also what ``--junitxml`` reports); this hook lists them.
"""

import pytest

WALL_TIME_PROPERTY = "quick_wall_time_s"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    times = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for key, value in getattr(report, "user_properties", []):
                if key == WALL_TIME_PROPERTY:
                    times[report.nodeid.rsplit("[", 1)[-1].rstrip("]")] = value
    if not times:
        return
    terminalreporter.section("notebook re-execution times, cells only (CGM_QUICK=1)")
    for name, seconds in sorted(times.items()):
        terminalreporter.write_line(f"{name:<40} {seconds:7.1f} s")
    terminalreporter.write_line(f"{'total':<40} {sum(times.values()):7.1f} s")

"""The command lines, as thin shells over the library: parse and validate, call, report.

``python -m flows.train`` (:mod:`flows.cli.train` → :func:`flows.training.train`),
``python -m flows.evaluate`` (:mod:`flows.cli.evaluate` → :func:`flows.evaluation.evaluate_model`)
and ``python -m flows.attack`` (:mod:`flows.cli.attack` → :mod:`flows.attacks.experiment`). Options
are generated from the configuration dataclasses (:func:`flows.arguments.add_options`), so each
default and each valid range is written once; a bad argument is one line and exit status 2.
"""

"""Test fixtures that are not part of the product: synthetic data and run directories.

* :mod:`helpers.integrate_fixtures`: a small negative-binomial toy atlas (``toy_atlas``).
* :mod:`helpers.query_fixtures`: reference run directories built from simulated data (``build_reference_run``).
* :mod:`helpers.report_fixtures`: a synthetic run directory for the report (``synthetic_run_dir``).

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject's pytest options), so tests import them as
``from helpers.<module> import ...``; the benchmark scripts put ``tests/`` on their path for the same imports.
"""

"""The report built from MLflow runs (HTML + PNG), ``sfh report`` and the MLflow UI launcher.

Reads what the harness wrote only through ``harness.results``; ``sfh`` finds the
``report`` command through the ``sfh.commands`` entry point, so the harness never imports this package.
"""

"""The report built from MLflow runs (HTML + PNG) and the MLflow UI launcher.

Reads what the harness wrote (``harness.results``, MLflow); the harness never imports this package.
"""

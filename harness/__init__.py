"""Orchestration around the ``spikingformer`` library: Ray Tune/Train, Optuna, MLflow and the CLI."""

"""The cost side: a row's step measured where its trials will run (``measure``, ``measuring_trial``), projected
over the whole experiment (``projection``), kept in MLflow (``plans``), and what a trial really drew while it
trained (``actuals``, with the devices' energy counters in ``power``)."""

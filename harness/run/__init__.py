"""The run side: trial specs planned on the driver (``specs``), the experiment's claim (``lock``), joining or
starting Ray (``cluster``), the Tune sweep and its restore (``sweep``), one trial inside Ray (``trial``) and its
progress lines (``progress``)."""

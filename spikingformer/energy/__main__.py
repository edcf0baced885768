"""``python -m spikingformer.energy``: a model's SOPs, MACs, firing rates and energy (``--help``)."""

import sys

from spikingformer.energy.cli import main

sys.exit(main())

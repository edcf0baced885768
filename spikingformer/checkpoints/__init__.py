"""Checkpoints: our training checkpoints (``training``: atomic writes, ``weights_only`` reads, resume points),
the import of checkpoints written by each family's upstream code (``upstream``), and any checkpoint file into a
model (``loading``)."""

from spikingformer.checkpoints.loading import Checkpoint, load_weights, read_checkpoint
from spikingformer.checkpoints.upstream import load_upstream_state_dict

__all__ = ["Checkpoint", "load_upstream_state_dict", "load_weights", "read_checkpoint"]

"""Slurm chains: an experiment trained by a chain of batch jobs that carries it through time limits and
preemption (``sfh slurm``). A job starts a Ray cluster on its allocation, runs ``sfh reproduce`` or ``sfh resume``
and requeues itself while rows remain; everything a chain needs lives in one folder beside the storage.
"""

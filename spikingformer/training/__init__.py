"""Training one run, in one process or as one DDP rank: ``engine.fit`` strings the epochs of ``epoch`` together
with checkpoints and callbacks; ``optim`` builds the optimizer and schedule, ``distributed`` is torch.distributed as
the engine sees it, ``tet`` the TET loss, ``step_cost`` one row's measured step. Nothing is imported here, so the
data package can use ``distributed`` without pulling in the engine."""

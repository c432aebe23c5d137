"""Training infrastructure the training jobs share: run folders and their identity, the Trainer, logger, callbacks
and progress, checkpoints, the optimizer and schedule, the finite-loss guard, the compute budget, their schemas."""

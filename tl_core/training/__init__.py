"""The training wing: the session, the trainer, checkpoints, batch size, distributed ranks, trackers."""

"""Training: meta-learning (`meta.train`), checkpoints, distributed set-up (torchrun) and run logging."""

"""Training (method §4): the engine and its step (gradients, clipping, Adam, EMA), AOT compilation,
resume checkpoints, learning-curve rows, FLOPs, host reads, and what a job shows its watchers."""

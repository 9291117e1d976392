"""Training in the core: the trainable-model contract, one resumable loop, data parallelism."""

"""What Ray Train runs on each worker of an attempt: the loop and the pieces around the Trainer
(data, model, callbacks). Ray pickles :func:`train_loop_per_worker` by reference, so a worker
imports this package to run it."""

from trainyard.workers.training.loop import LoopConfig, train_loop_per_worker

__all__ = ["LoopConfig", "train_loop_per_worker"]

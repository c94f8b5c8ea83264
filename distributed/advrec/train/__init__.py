"""Training: the per-worker loop, the driver that launches it, checkpoints."""

from advrec.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from advrec.train.driver import launch, read_run, resume_training, run_training
from advrec.train.loop import train_loop_per_worker

__all__ = ["launch", "load_checkpoint", "load_model", "read_run", "resume_training",
           "run_training", "save_checkpoint", "train_loop_per_worker"]

"""Training: config, the jitted step, Orbax checkpoints and the loop."""

from jaxrec.train.config import TrainConfig, apply_overrides, load_config_file
from jaxrec.train.trainer import build_run, train

__all__ = ["TrainConfig", "apply_overrides", "build_run", "load_config_file", "train"]

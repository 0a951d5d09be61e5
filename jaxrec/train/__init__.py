"""Training: the typed config, the run directory, the jitted step and the loop."""

from jaxrec.train.config import Config, Ranking, Retrieval, load_config_file
from jaxrec.train.rundir import RunDir
from jaxrec.train.trainer import build_run, train

__all__ = ["Config", "Ranking", "Retrieval", "RunDir", "build_run", "load_config_file", "train"]

"""The model zoo: MostPopular baseline and the self-attention retrieval models by name."""

from jaxrec.models.base import ModelConfig, RetrievalModel
from jaxrec.models.bert4rec import BERT4Rec
from jaxrec.models.hstu import HSTU
from jaxrec.models.popular import MostPopular
from jaxrec.models.registry import REGISTRY, build_model, resolve
from jaxrec.models.sasrec import SASRec

__all__ = ["BERT4Rec", "HSTU", "ModelConfig", "MostPopular", "REGISTRY", "RetrievalModel", "SASRec",
           "build_model", "resolve"]

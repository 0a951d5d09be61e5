"""The model zoo by name: MostPopular, the self-attention retrieval models, the cross-attention rankers."""

from jaxrec.models.base import ModelConfig, RetrievalModel
from jaxrec.models.bert4rec import BERT4Rec
from jaxrec.models.hstu import HSTU
from jaxrec.models.popular import MostPopular
from jaxrec.models.rankers import BST, EncoderDecoder, RankingModel, TargetAttention
from jaxrec.models.registry import REGISTRY, build_model, resolve
from jaxrec.models.sasrec import SASRec

__all__ = ["BERT4Rec", "BST", "EncoderDecoder", "HSTU", "ModelConfig", "MostPopular", "REGISTRY",
           "RankingModel", "RetrievalModel", "SASRec", "TargetAttention", "build_model", "resolve"]

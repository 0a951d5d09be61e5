"""The model zoo by name: MostPopular, the self-attention retrieval models, the cross-attention rankers."""

from jaxrec.models.base import (BERT4RecConfig, HSTUConfig, ModelConfig, RankerConfig, RetrievalModel,
                                 SelfAttentionConfig)
from jaxrec.models.bert4rec import BERT4Rec
from jaxrec.models.hstu import HSTU
from jaxrec.models.popular import MostPopular
from jaxrec.models.rankers import BST, EncoderDecoder, RankingModel, TargetAttention
from jaxrec.models.registry import REGISTRY, build_model, model_settings, resolve
from jaxrec.models.sasrec import SASRec

__all__ = ["BERT4Rec", "BERT4RecConfig", "BST", "EncoderDecoder", "HSTU", "HSTUConfig", "ModelConfig",
           "MostPopular", "REGISTRY", "RankerConfig", "SelfAttentionConfig", "model_settings",
           "RankingModel", "RetrievalModel", "SASRec", "TargetAttention", "build_model", "resolve"]

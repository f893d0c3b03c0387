"""Pinterest act-alike system (deWet & Ou, KDD 2019): StarSpace user embeddings, hyperplane-LSH density
scoring, affinity MLP, per-campaign classifier and their ensemble."""

from lookalike_models.pinterest.embedding import embed_users, shared_encoder
from lookalike_models.pinterest.encoder import EncoderConfig, StarSpaceUserEncoder, train_encoder, transfer_error
from lookalike_models.pinterest.lsh import HyperplaneLSH, RegionTable
from lookalike_models.publishing import write_embeddings

__all__ = [
    "EncoderConfig",
    "HyperplaneLSH",
    "RegionTable",
    "StarSpaceUserEncoder",
    "embed_users",
    "shared_encoder",
    "train_encoder",
    "transfer_error",
    "write_embeddings",
]

"""The configuration of ``pinterest_ensemble`` (``ensemble.py``): its members and their parameters, checked
when the config is read (a typo inside a member's params fails naming its whole key path), and the blend's knobs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from lookalike_models.baselines import PopularityScorer, RandomScorer
from lookalike_models.item_ridge import ItemRidgeScorer
from lookalike_models.minhash import MinHashScorer
from lookalike_models.pinterest.affinity import AffinityMLPScorer
from lookalike_models.pinterest.classifier import PinterestClassifierScorer
from lookalike_models.pinterest.embedding import CentroidCosineScorer, EmbeddingScorer
from lookalike_models.pinterest.encoder import EncoderConfig
from lookalike_models.pinterest.lsh_scorers import LSHDensityScorer, LSHVotingScorer
from lookalike_models.reference import ItemLogRegScorer, SVDCentroidScorer
from lookalike_models.scorers import pick_scorer, validated_params
from lookalike_models.strict_config import StrictConfig

# What an ensemble may be made of: the Pinterest family, the references and the baselines.
MEMBER_SCORERS = (
    AffinityMLPScorer,
    CentroidCosineScorer,
    LSHDensityScorer,
    LSHVotingScorer,
    PinterestClassifierScorer,
    ItemLogRegScorer,
    SVDCentroidScorer,
    ItemRidgeScorer,
    MinHashScorer,
    PopularityScorer,
    RandomScorer,
)


def member_params(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of the member ``model`` as written, once its config accepts them; an embedding member may not
    set ``encoder``: every embedding member uses the ensemble's one (one shared encoder, trained once)."""
    cls = pick_scorer(MEMBER_SCORERS, model, "an ensemble member")
    if issubclass(cls, EmbeddingScorer) and "encoder" in params:
        raise ValueError(
            f"ensemble member '{model}' sets its own 'encoder': every embedding member uses the ensemble's "
            "`encoder` (one shared encoder); set pinterest_ensemble's params.encoder instead"
        )
    return validated_params(cls, params)


class MemberSpec(StrictConfig):
    model: str = Field(description="Registered scorer name, e.g. lsh_density or svd_centroid")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The member's config; no 'encoder': the ensemble's is used"
    )

    # An unknown member or parameter fails when the config is read, not after the members before it were fitted.
    @field_validator("model")
    @classmethod
    def _known_member(cls, model: str) -> str:
        pick_scorer(MEMBER_SCORERS, model, "an ensemble member")
        return model

    @field_validator("params")
    @classmethod
    def _member_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return member_params(info.data["model"], params) if "model" in info.data else params


class EnsembleConfig(StrictConfig):
    mode: Literal["validated", "paper"] = Field("validated", description="validated blend, or the paper's merge")
    embedding_model: str = Field("affinity_mlp", description="Embedding member (any Pinterest embedding scorer)")
    embedding_params: dict[str, Any] = Field(
        default_factory=dict, description="The embedding member's config; no 'encoder': the ensemble's is used"
    )
    classifier_params: dict[str, Any] = Field(
        default_factory=dict, description="pinterest_classifier's config; no 'encoder': the ensemble's is used"
    )
    # item_ridge by default: on tuning splits 100-104 it lifted the ensemble from -0.014 / -0.035 to -0.001 /
    # +0.000 recall@5% of item_ridge alone on MovieLens / Amazon (bench/results/ensemble_item_ridge_tuning.md).
    extra_members: list[MemberSpec] = Field(
        default_factory=lambda: [MemberSpec(model="item_ridge")], description="More members (validated mode)"
    )
    encoder: EncoderConfig = Field(
        default_factory=EncoderConfig,
        description="The one encoder every embedding member uses (members may not set their own)",
    )
    # validated mode
    # scope and min_gain chosen on tuning splits 100-104 (bench/results/classifier_ensemble.md): per campaign
    # or per bucket the cut is too small and the choice overfits it; min_gain 0.01 removed the last loss.
    scope: Literal["campaign", "bucket", "all"] = Field(
        "all", description="Where blend weights are chosen: per campaign, per seed bucket, or once"
    )
    bucket_edges: list[int] = Field([50, 200], description="Seed-list size buckets for scope=bucket")
    min_gain: float = Field(
        0.01,
        ge=0,
        description="A blend replaces the best single member only where its mean "
        "validation recall is higher by more than this",
    )
    # On: on tuning splits 100-104 it was never below item_ridge alone on eight shapes and lifted the sparse
    # ones by +0.027/+0.033 (min_gain 0 fell 0.006 below on one: bench/results/ensemble_stacker_tuning*.md);
    # on reported splits 0-4 it is never below the grid-only ensemble (ensemble_stacker_reported.md).
    stacker: bool = Field(
        True,
        description="Also offer an activity-aware logistic stacker over member ranks (validated out of fold), "
        "chosen under the same min_gain rule as the grid blends",
    )
    stacker_c: float = Field(1.0, gt=0, description="Inverse L2 strength of the stacker's logistic regression")
    weight_step: float = Field(0.25, gt=0, le=1, description="Grid step of the blend weights (they sum to 1)")
    validation_share: float = Field(0.2, gt=0, lt=1, description="Share of training seeds held out to choose weights")
    # 4 cuts: on tuning splits 100-104 over six data shapes never below item_ridge alone and +0.011 on one;
    # 2 cuts fell 0.006 below it on one shape (bench/results/ensemble_blend_tuning.md).
    validation_folds: int = Field(
        4, ge=1, le=10, description="Independent inner cuts the blend's recall is averaged over"
    )
    # 20,000: a 5% cutoff then has 1,000 sampled users above it (its place off by ~3% of itself), and every
    # member scores a fifth of what 100,000 cost at millions of users; data sets this small use everyone.
    max_validation_users: int = Field(20_000, ge=100, description="Non-seed users scored to place the cut's cutoff")
    max_validation_campaigns: int = Field(
        32, ge=1, description="With scope=all, campaigns sampled per cut to choose the blend"
    )
    # A cost bound, not tuned on any data set: below it (every data set of the quality benches) ranks are exact;
    # above it a percentile estimated from 200,000 users has a standard error of at most 0.11 percentage points.
    rank_reference_users: int = Field(
        200_000,
        ge=1_000,
        description="Members' scores are ranked among this many users (everyone below it, else a seeded "
        "sample), the same for every user shard, so sharded and local audiences agree",
    )
    seed: int = 0
    # both modes: audience share of the validation recall / of the paper's intersection
    reference_share: float = Field(0.05, gt=0, le=1, description="Top-list size, share of users")
    # paper mode
    small_seeds: int = Field(50, ge=1, description="Seed-list size at and below which embedding_share_small holds")
    large_seeds: int = Field(500, ge=2, description="Seed-list size at and above which embedding_share_large holds")
    embedding_share_small: float = Field(0.5, ge=0, le=1, description="Embedding share of the fill, small lists")
    embedding_share_large: float = Field(0.2, ge=0, le=1, description="Embedding share of the fill, large lists")

    # Members and their parameters fail when the config is read, not after the members before them were fitted.
    @field_validator("embedding_model")
    @classmethod
    def _known_embedding_member(cls, model: str) -> str:
        pick_scorer(MEMBER_SCORERS, model, "an ensemble member")
        return model

    @field_validator("embedding_params")
    @classmethod
    def _embedding_member_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return member_params(info.data["embedding_model"], params) if "embedding_model" in info.data else params

    @field_validator("classifier_params")
    @classmethod
    def _classifier_member_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        return member_params(PinterestClassifierScorer.name, params)

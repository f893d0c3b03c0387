"""MetaHeac (Zhu et al., KDD 2021): meta-learned hybrid experts and critics for new campaigns."""

from lookalike_models.metaheac.scorer import JointBaselineScorer, MetaHeacScorer, ScratchBaselineScorer
from lookalike_models.metaheac.training import MetaHeacConfig, campaign_kind

__all__ = ["JointBaselineScorer", "MetaHeacConfig", "MetaHeacScorer", "ScratchBaselineScorer", "campaign_kind"]

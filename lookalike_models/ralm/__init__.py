"""RALM (Liu et al., KDD 2019): attention-merge user representation + real-time attention look-alike."""

from lookalike_models.ralm.scorer import Ralm, RalmAverage, recluster_campaign, recluster_campaigns

__all__ = ["Ralm", "RalmAverage", "recluster_campaign", "recluster_campaigns"]

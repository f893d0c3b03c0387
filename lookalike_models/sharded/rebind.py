"""A fitted ``pinterest_ensemble``'s per-user state for any users, from the fitted parameters alone.

The single-process members hold per-user state computed over their fit population: StarSpace embeddings (whose
tf-idf bag weights and activity field are normalised by the population's idf and largest activity), the
classifier's TF-IDF rows (the population's idf) and item_ridge's binary rows (the fit's kept items). A
``UserFeaturizer`` keeps those population constants from the fit (the panel) and computes the same state for
any rows, one user at a time in effect: a shard's users get the state they would have had in the panel, so
their scores depend on the user and the fitted model only (shard-invariant). ``rebind`` hands that state for a
new set of rows (the panel plus seeds gathered later) to the fitted members.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfTransformer

from lookalike_models.dataset import LookalikeData, distinct
from lookalike_models.item_ridge import ItemRidgeScorer, binary_features
from lookalike_models.pinterest.affinity import AffinityMLPScorer
from lookalike_models.pinterest.classifier import PinterestClassifierScorer
from lookalike_models.pinterest.embedding import CentroidCosineScorer, EmbeddingScorer
from lookalike_models.pinterest.encoder import EncoderConfig, encode_users
from lookalike_models.pinterest.encoder_inputs import organic_mask, user_inputs
from lookalike_models.pinterest.encoder_model import StarSpaceUserEncoder
from lookalike_models.pinterest.stacker import user_activity
from lookalike_models.reference import user_item_matrix
from lookalike_models.scorers import AudienceScorer
from lookalike_models.threads import torch_threads

# The members whose per-user state a featurizer can rebuild; others fail at fit, naming themselves.
SUPPORTED_MEMBERS = (AffinityMLPScorer, CentroidCosineScorer, PinterestClassifierScorer, ItemRidgeScorer)
ENCODE_BATCH = 65_536  # users embedded at once: memory follows the batch, not the shard


@dataclass
class UserState:
    """What the members read of a set of users (row i = user i of the rows it was computed from)."""

    embeddings: np.ndarray | None  # float32 [n, d] unit rows
    classifier_rows: sp.csr_matrix | None  # float32 [n, n_items (+ d)]
    ridge_rows: sp.csr_matrix | None  # float64 [n, n_kept]
    activity: np.ndarray  # float64 [n]: the stacker's log(1 + distinct items)


def sublinear_idf(matrix: sp.csr_matrix) -> TfidfTransformer:
    """``reference.user_item_tfidf``'s transformer fitted on ``matrix``: its ``transform`` of the same rows is
    ``fit_transform``'s, and of other rows uses this population's idf."""
    return TfidfTransformer(sublinear_tf=True).fit(matrix)


def kept_activity(data: LookalikeData, keep: np.ndarray) -> np.ndarray:
    """float32 [n_users]: ``user_inputs``' log(1 + distinct kept items), before its division by the largest."""
    pairs = distinct(data.user_idx[keep].astype(np.int64) * data.n_items + data.item_idx[keep])
    return np.log1p(np.bincount(pairs // data.n_items, minlength=data.n_users)).astype(np.float32)


@dataclass
class UserFeaturizer:
    """The fit population's constants and the fitted encoder: every member's per-user state for any rows."""

    encoder: StarSpaceUserEncoder | None
    encoder_cfg: EncoderConfig | None
    proxy_items: np.ndarray  # the transfer task's withheld items (out of the bags unless folded back in)
    organic_idf: TfidfTransformer | None  # the encoder bags' tf-idf
    activity_max: float  # the encoder's activity field is activity / this
    classifier_idf: TfidfTransformer | None
    classifier_cfg: dict | None  # weighting, embedding_weight
    ridge_keep: np.ndarray | None

    @classmethod
    def from_fit(cls, members: list[AudienceScorer], panel: LookalikeData) -> UserFeaturizer:
        """The constants of the panel the ensemble's ``members`` were fitted on."""
        for member in members:
            if not isinstance(member, SUPPORTED_MEMBERS):
                raise NotImplementedError(f"sharded pinterest_ensemble: member {member.name} is not supported")
        embedded = next((m for m in members if isinstance(m, EmbeddingScorer) and m.fitted is not None), None)
        encoder = cfg = idf = None
        proxy, activity_max = np.zeros(0, np.int64), 1.0
        if embedded is not None:
            encoder, cfg = embedded.fitted.model, embedded.config.encoder
            proxy = np.asarray(embedded.fitted.transfer_task.items, np.int64)
            keep = encoder_mask(panel, cfg, proxy)
            idf = sublinear_idf(user_item_matrix(panel, keep)) if cfg.history_weighting == "tfidf" else None
            activity_max = max(float(kept_activity(panel, keep).max(initial=0.0)), 1e-9)
        classifier = next((m for m in members if isinstance(m, PinterestClassifierScorer)), None)
        clf_cfg = clf_idf = None
        if classifier is not None:
            clf_cfg = {"weighting": classifier.config.weighting, "embedding_weight": classifier.config.embedding_weight}
            clf_idf = sublinear_idf(user_item_matrix(panel)) if clf_cfg["weighting"] == "tfidf" else None
        ridge = next((m for m in members if isinstance(m, ItemRidgeScorer)), None)
        keep_items = None if ridge is None else ridge.keep
        return cls(encoder, cfg, proxy, idf, activity_max, clf_idf, clf_cfg, keep_items)

    def embeddings(self, data: LookalikeData) -> np.ndarray | None:
        """float32 [n_users, d]: ``organic_inputs`` of these users (the panel's idf and largest activity) through
        the fitted encoder, in batches of ``ENCODE_BATCH`` users."""
        if self.encoder is None:
            return None
        cfg = self.encoder_cfg
        keep = encoder_mask(data, cfg, self.proxy_items)
        tfidf = None
        if cfg.history_weighting == "tfidf":
            tfidf = self.organic_idf.transform(user_item_matrix(data, keep)).astype(np.float32).tocsr()
        inputs = user_inputs(data, keep, cfg.history_len, cfg.activity_field, cfg.history_weighting, tfidf)
        if cfg.activity_field:  # the population's scale, not these users' largest activity
            inputs.features.continuous[:, -1] = torch.as_tensor(kept_activity(data, keep) / self.activity_max)
        with torch_threads(1):
            return encode_users(self.encoder, inputs, ENCODE_BATCH)

    def classifier_rows(self, data: LookalikeData, embeddings: np.ndarray | None) -> sp.csr_matrix | None:
        """``PinterestClassifierScorer._features`` of these users with the panel's idf."""
        cfg = self.classifier_cfg
        if cfg is None:
            return None
        if cfg["weighting"] == "tfidf":
            rows = self.classifier_idf.transform(user_item_matrix(data)).astype(np.float32).tocsr()
        else:
            rows = user_item_matrix(data)
            rows.data[:] = 1.0
        if cfg["embedding_weight"] <= 0:
            return rows
        return sp.hstack([rows, sp.csr_matrix(cfg["embedding_weight"] * embeddings)], format="csr", dtype=np.float32)

    def state(self, data: LookalikeData) -> UserState:
        embeddings = self.embeddings(data)
        ridge = None if self.ridge_keep is None else binary_features(data, self.ridge_keep)
        return UserState(embeddings, self.classifier_rows(data, embeddings), ridge, user_activity(data))


def encoder_mask(data: LookalikeData, cfg: EncoderConfig, proxy_items: np.ndarray) -> np.ndarray:
    """The interactions ``organic_inputs`` keeps: organic ones, less the proxy items unless folded back in."""
    keep = organic_mask(data)
    if not cfg.fold_in_proxy_items:
        keep &= ~np.isin(data.item_idx, proxy_items)
    return keep


def rebind(members: list[AudienceScorer], state: UserState) -> None:
    """Point the fitted ``members`` at ``state``'s users (their parameters unchanged; caches keyed by user
    positions dropped), so ``member.score(rows, seeds, candidates)`` reads positions in those rows."""
    for member in members:
        if isinstance(member, EmbeddingScorer) and member.fitted is not None:
            member.fitted = replace(member.fitted, embeddings=state.embeddings)
        if isinstance(member, PinterestClassifierScorer):
            member.features, member.models = state.classifier_rows, {}
        if isinstance(member, ItemRidgeScorer):
            member.features, member.solved = state.ridge_rows, {}

"""GuidedSASRec, GuidedBERT4Rec, GuidedGRU4Rec: the RecBole parents with a refined item table.

All three are the same few lines (``GuidedRecommender``) placed before their parent: the parent
builds and initializes its network, then the item table is swapped for the refined one and, if
enabled, user guided vectors add ``<p_u, g_i>`` to every score. Forward, loss and scoring are the
parent's own.
"""

from __future__ import annotations

from contextlib import contextmanager

from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec

from recbole_guided.options import GuidedOptions
from recbole_guided.refined_embedding import build_refined_embedding
from recbole_guided.user_guided import build_user_guided

GUIDED_MODELS: dict[str, type] = {}  # filled by the classes themselves: a new Guided model is one class


class GuidedRecommender:
    """Mixin for a RecBole sequential model whose item table is ``item_embedding``.

    A Guided model is ``class GuidedX(GuidedRecommender, X)`` plus ``properties/model/GuidedX.yaml``;
    defining the class registers it under its name.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        GUIDED_MODELS[cls.__name__] = cls

    def __init__(self, config, dataset):
        super().__init__(config, dataset)  # re-initializes every embedding: replace the table after
        options = GuidedOptions.from_config(config)
        self.item_embedding = build_refined_embedding(options, config, dataset, self.item_embedding)
        self.user_guided = build_user_guided(options, config, dataset, self.item_embedding)
        self._users = None  # the batch's user ids while a scoring method runs

    @classmethod
    def parent_class(cls) -> type:
        """The RecBole model this one refines (the first RecBole class in its bases)."""
        return next(c for c in cls.__mro__ if c.__module__.startswith("recbole.model."))

    def train(self, mode: bool = True):
        if not mode:  # about to score: cold rows follow the warm rows training has moved
            self.item_embedding.place_cold_rows()
        return super().train(mode)

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        if self._users is None:
            return output
        return output + self.user_guided.offset(self._users, output)

    @contextmanager
    def _scoring_users(self, interaction):
        """The parents' forward takes no user id; hand the batch's users to ``forward`` meanwhile."""
        self._users = interaction[self.USER_ID] if self.user_guided is not None else None
        try:
            yield
        finally:
            self._users = None

    def calculate_loss(self, interaction):
        with self._scoring_users(interaction):
            return super().calculate_loss(interaction)

    def predict(self, interaction):
        with self._scoring_users(interaction):
            return super().predict(interaction)

    def full_sort_predict(self, interaction):
        with self._scoring_users(interaction):
            return super().full_sort_predict(interaction)

    def user_representation(self, interaction):
        """``h_u`` (with ``p_u`` on the guided coordinates) that ``full_sort_predict`` multiplies
        with the item table: ``scores = user_representation @ item_table.T + item_bias``."""
        with self._scoring_users(interaction):
            return self._sequence_output(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    def _sequence_output(self, item_seq, item_seq_len):
        return self.forward(item_seq, item_seq_len)

    def item_bias(self):
        """Per-item score offset outside the dot product (BERT4Rec's ``output_bias``), or ``None``."""
        return None


class GuidedSASRec(GuidedRecommender, SASRec):
    """SASRec over refined item embeddings."""


class GuidedBERT4Rec(GuidedRecommender, BERT4Rec):
    """BERT4Rec over refined item embeddings; the mask row has a zero guided part."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # A cold item's output bias, like its table row, would only ever be pushed down.
        self.output_bias.register_hook(self._without_cold_rows)

    def _without_cold_rows(self, grad):
        return grad.masked_fill(self.item_embedding.frozen_rows.squeeze(1)[:grad.shape[0]], 0.0)

    def _sequence_output(self, item_seq, item_seq_len):
        item_seq = self.reconstruct_test_data(item_seq, item_seq_len)  # as in full_sort_predict
        return self.gather_indexes(self.forward(item_seq), item_seq_len - 1)

    def item_bias(self):
        return self.output_bias


class GuidedGRU4Rec(GuidedRecommender, GRU4Rec):
    """GRU4Rec over refined item embeddings (width ``embedding_size``)."""

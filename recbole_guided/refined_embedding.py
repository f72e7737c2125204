"""The refined item embedding ``e_i = [b_i ; g_i]``: PCA-reduced base part + normalized guided part.

``RefinedItemEmbedding`` is a drop-in for the parents' ``nn.Embedding``: they read ``.weight``
for their CE logits and full ranking, and call the module for lookups, so nothing else changes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recbole_guided.errors import ConfigError
from recbole_guided.guided_sources import item_base, item_guided
from recbole_guided.options import NORMALIZATIONS, GuidedOptions, scale_factor
from recbole_guided.training_split import warm_items


def normalize_columns(values: np.ndarray, method: str) -> np.ndarray:
    """Per-attribute normalization, statistics over the given (real item) rows only."""
    if method == "none":
        return values.copy()
    if method == "zscore":
        center, spread = values.mean(axis=0), values.std(axis=0)
    elif method == "minmax":
        center, spread = values.min(axis=0), values.max(axis=0) - values.min(axis=0)
    else:
        raise ConfigError(f"guided_norm '{method}' unknown; expected one of {NORMALIZATIONS}")
    # A constant attribute carries no information: it becomes 0 rather than NaN.
    return np.divide(values - center, spread, out=np.zeros_like(values), where=spread > 0)


def center_rows(values: np.ndarray, how: str) -> np.ndarray:
    """``item``: remove each row's mean over its attributes, the rater's halo.

    An LLM rates a film it knows well higher on nearly every attribute, and an obscure one closer
    to the middle of the scale; that shared level is not about any one attribute. On ml-100k it
    made the qwen2.5-1.5b ratings of thought_provoking run against Documentary and tension against
    Horror; with each item's mean removed, 18 of the 19 genre relations hold and none runs against
    (docs/llm_validity.md)."""
    if how == "none" or values.shape[1] < 2:
        return values.copy()
    return values - values.mean(axis=1, keepdims=True)


def guided_scale(option, base: np.ndarray, guided: np.ndarray) -> float:
    """The factor applied to the normalized guided part.

    ``auto`` gives each attribute the spread of an average base dimension; ``auto*k`` k times that. A trained item table
    has small coordinates (SASRec's on ml-100k: std 0.05 per dimension), while z-scored attributes
    have std 1: unscaled, a few frozen attributes would outweigh the whole base part in every dot
    product (measured on ml-100k: -30% MRR@10 against SASRec with scale 1.0, see docs/benchmarks.md).
    """
    relative, factor = scale_factor(option)
    if not relative:
        return factor
    guided_spread = guided.std(axis=0).mean() if guided.size else 0.0
    base_spread = base.std(axis=0).mean() if base.size else 0.0
    if guided_spread == 0 or base_spread == 0:  # nothing to match (no base part, or constant attributes)
        return factor
    return float(factor * base_spread / guided_spread)


def pca_reduce(vectors: np.ndarray, dim: int, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """Project centered ``vectors`` on the ``dim`` leading principal axes (the most variance) of
    ``vectors[fit_rows]`` (all rows by default: the axes of warm items serve cold items too)."""
    if dim > vectors.shape[1]:
        raise ConfigError(
            f"the base part needs {dim} dimensions but the base embeddings have only {vectors.shape[1]}"
        )
    fitted = vectors if fit_rows is None else vectors[fit_rows]
    center = fitted.mean(axis=0)
    _, _, vt = np.linalg.svd(fitted - center, full_matrices=False)
    reduced = (vectors - center) @ vt[:dim].T
    # Fewer items than dimensions: there are only n axes; the rest of the width starts at zero.
    return np.pad(reduced, ((0, 0), (0, dim - reduced.shape[1])))


RIDGE = 1.0  # the map's penalty; attributes are normalized, so it only matters for collinear ones


def predict_base(features: np.ndarray, base: np.ndarray, warm: np.ndarray, rule: str,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """Base part of ``rows`` (default: all) from their ``features``: the ridge map ``features ->
    base`` fitted on ``warm`` rows (``attributes``), or the warm rows' mean (``mean``, or when
    there are no features)."""
    rows = np.arange(len(features)) if rows is None else rows
    mean = base[warm].mean(axis=0)
    if rule == "mean" or features.shape[1] == 0:
        return np.broadcast_to(mean, (len(features[rows]), base.shape[1])).copy()
    center = features[warm].mean(axis=0)
    x = features[warm] - center
    weights = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ (base[warm] - mean))
    return mean + (features[rows] - center) @ weights


class RefinedItemEmbedding(nn.Module):
    """Item table whose row ``i`` is ``[base_i ; guided_i]``.

    Row 0 (padding) is always zero. Rows at or past ``n_items`` (BERT4Rec's mask token) have a zero
    guided part, since no attribute describes them, and a trainable base part. Rows in
    ``frozen_rows`` (cold items) get no gradient: training could only push them down as negatives.
    """

    def __init__(self, base: torch.Tensor, guided: torch.Tensor, n_items: int,
                 base_trainable: bool = True, guided_trainable: bool = False,
                 attributes: list[str] | None = None, scale: float = 1.0,
                 frozen_rows: torch.Tensor | None = None, file_rows: torch.Tensor | None = None,
                 cold_rule: str = "attributes"):
        super().__init__()
        if base.shape[0] != guided.shape[0]:
            raise ValueError(f"base has {base.shape[0]} rows, guided {guided.shape[0]}")
        n_rows = base.shape[0]
        self.base = nn.Parameter(base.float().clone(), requires_grad=base_trainable)
        self.guided = nn.Parameter(guided.float().clone(), requires_grad=guided_trainable)
        rows = torch.arange(n_rows).unsqueeze(1)
        self.register_buffer("base_mask", (rows != 0).float(), persistent=False)
        self.register_buffer("guided_mask", ((rows != 0) & (rows < n_items)).float(), persistent=False)
        frozen = torch.zeros(n_rows, dtype=torch.bool) if frozen_rows is None else frozen_rows.bool()
        self.register_buffer("frozen_rows", frozen.unsqueeze(1), persistent=False)
        # What cold rows are re-predicted from: the build-time base rows of the items the base file had.
        known = torch.zeros(n_rows, dtype=torch.bool) if file_rows is None else file_rows.bool()
        self.register_buffer("file_rows", known, persistent=False)
        self.register_buffer("initial_base", base.float().clone(), persistent=False)
        self.cold_rule = cold_rule
        self.n_items = n_items
        self.attributes = list(attributes or [f"g{k}" for k in range(guided.shape[1])])
        self.scale = scale  # what the normalized attribute scores were multiplied by

    @torch.no_grad()
    def place_cold_rows(self) -> None:
        """Re-predict the frozen (cold) rows' base part from the warm rows as training has left them.

        The warm rows move during training while a cold row gets no gradient, so a map fitted on
        the build-time rows would place cold items where the warm ones no longer are. Refitted on
        the current rows (ridge, ``predict_base``): from the normalized attributes, plus the
        build-time coordinates for a row the base file had (e.g. a text vector). The Guided models
        call this whenever they switch to scoring (``eval()``).
        """
        cold = self.frozen_rows.squeeze(1).cpu().numpy()
        if not cold.any() or not self.base_dim or not self.base.requires_grad:
            return  # nothing cold, no base part, or a frozen base: the build's placement stands
        warm = ~cold
        warm[0], warm[self.n_items:] = False, False
        attributes = (self.guided / (self.scale or 1.0)).detach().double().cpu().numpy()
        base = self.base.detach().double().cpu().numpy()
        from_file = self.file_rows.cpu().numpy()
        with_vector = cold & from_file  # predicted from their build-time row as well
        for rows, rule in ((with_vector, "attributes"), (cold & ~from_file, self.cold_rule)):
            if rows.any():
                features = attributes
                if rows is with_vector:
                    features = np.hstack([self.initial_base.double().cpu().numpy(), attributes])
                base[rows] = predict_base(features, base, warm, rule, np.flatnonzero(rows))
        self.base.copy_(torch.from_numpy(base).to(self.base))

    @property
    def base_dim(self) -> int:
        return self.base.shape[1]

    @property
    def guided_dim(self) -> int:
        return self.guided.shape[1]

    @property
    def embedding_dim(self) -> int:
        return self.base_dim + self.guided_dim

    @property
    def num_embeddings(self) -> int:
        return self.base.shape[0]

    @property
    def cold_items(self) -> torch.Tensor:
        """Ids of the frozen (cold) rows."""
        return self.frozen_rows.squeeze(1).nonzero().squeeze(1)

    @staticmethod
    def _frozen(param: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
        """``param`` with no gradient through the ``frozen`` rows (same values)."""
        return torch.where(frozen, param.detach(), param) if param.requires_grad else param

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self._frozen(self.base, self.frozen_rows) * self.base_mask,
                          self._frozen(self.guided, self.frozen_rows) * self.guided_mask], dim=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Gather the rows asked for: rebuilding the whole [n_items, d] table for each lookup (a BPR
        # batch's positives and negatives) would cost O(catalog) per step.
        frozen = F.embedding(ids, self.frozen_rows).bool()
        return torch.cat([self._frozen(F.embedding(ids, self.base), frozen) * F.embedding(ids, self.base_mask),
                          self._frozen(F.embedding(ids, self.guided), frozen) * F.embedding(ids, self.guided_mask)],
                         dim=-1)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, base={self.base_dim} (trainable={self.base.requires_grad}), "
                f"guided={self.guided_dim} (trainable={self.guided.requires_grad})")


def base_part(options: GuidedOptions, config, dataset, attributes: np.ndarray, cold: np.ndarray,
              base_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Row i = item id i: the PCA (fitted on warm items) of the base file's vectors; a cold item the
    file lacks gets ``predict_base`` from its normalized ``attributes``. Also returns which rows
    the file had."""
    vectors = item_base(options, config, dataset, optional=cold)
    known = ~np.isnan(vectors).any(axis=1)
    known[0] = False
    fit_rows = known & ~cold
    base = np.zeros((len(vectors), base_dim))
    base[known] = pca_reduce(vectors[known], base_dim, fit_rows=fit_rows[known])
    unknown = np.flatnonzero(~known[1:]) + 1
    if len(unknown):
        base[unknown] = predict_base(attributes, base, fit_rows, options.cold_items, unknown)
    return base, known


def build_refined_embedding(options: GuidedOptions, config, dataset,
                            parent_table: nn.Embedding) -> RefinedItemEmbedding:
    """Replace a parent's freshly initialized item table with the refined one (same shape).

    ``dataset`` is the training split: items it lacks are cold (``cold_items``)."""
    n_rows, width = parent_table.weight.shape
    n_items = dataset.item_num
    attributes, raw = item_guided(options, config, dataset) if options.use_guided else ([], np.zeros((n_items, 0)))
    normalized = np.zeros((n_items, len(attributes)))
    if options.guided_source == "file":  # LLM ratings; metadata and random vectors have no halo
        raw[1:] = center_rows(raw[1:], options.guided_center)
    normalized[1:] = normalize_columns(raw[1:], options.guided_norm)

    base_dim = options.base_dim if options.base_dim is not None else width - len(attributes)
    if base_dim + len(attributes) != width:
        raise ConfigError(
            f"base_dim ({base_dim}) + {len(attributes)} guided attributes must equal the model width {width}"
        )
    if base_dim < 0:
        raise ConfigError(f"{len(attributes)} guided attributes do not fit in the model width {width}")
    cold = np.zeros(n_rows, dtype=bool)
    if options.cold_items != "train":
        cold[1:n_items] = ~warm_items(dataset)[1:]
    base = np.zeros((n_rows, base_dim))
    from_file = np.zeros(n_rows, dtype=bool)
    if options.use_base and base_dim:
        base[:n_items], from_file[:n_items] = base_part(options, config, dataset, normalized, cold[:n_items], base_dim)
        # Special rows (BERT4Rec's mask token) keep the parent's fresh initialization.
        base[n_items:] = parent_table.weight.detach()[n_items:, :base_dim].double().numpy()
    guided = np.zeros((n_rows, len(attributes)))
    trained = np.flatnonzero(~cold[1:n_items]) + 1
    scale = guided_scale(options.guided_scale, base[trained], normalized[trained])
    guided[:n_items] = normalized * scale
    return RefinedItemEmbedding(
        torch.from_numpy(base), torch.from_numpy(guided), n_items,
        base_trainable=options.use_base and options.base_trainable,
        guided_trainable=options.guided_trainable,
        attributes=attributes,
        scale=scale,
        frozen_rows=torch.from_numpy(cold),
        file_rows=torch.from_numpy(from_file),
        cold_rule=options.cold_items,
    )

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


def pca_reduce(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Project centered ``vectors`` on their ``dim`` leading principal axes (the most variance)."""
    if dim > vectors.shape[1]:
        raise ConfigError(
            f"the base part needs {dim} dimensions but the base embeddings have only {vectors.shape[1]}"
        )
    centered = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    reduced = centered @ vt[:dim].T
    # Fewer items than dimensions: there are only n axes; the rest of the width starts at zero.
    return np.pad(reduced, ((0, 0), (0, dim - reduced.shape[1])))


class RefinedItemEmbedding(nn.Module):
    """Item table whose row ``i`` is ``[base_i ; guided_i]``.

    Row 0 (padding) is always zero. Rows at or past ``n_items`` (BERT4Rec's mask token) have a zero
    guided part, since no attribute describes them, and a trainable base part.
    """

    def __init__(self, base: torch.Tensor, guided: torch.Tensor, n_items: int,
                 base_trainable: bool = True, guided_trainable: bool = False,
                 attributes: list[str] | None = None, scale: float = 1.0):
        super().__init__()
        if base.shape[0] != guided.shape[0]:
            raise ValueError(f"base has {base.shape[0]} rows, guided {guided.shape[0]}")
        n_rows = base.shape[0]
        self.base = nn.Parameter(base.float().clone(), requires_grad=base_trainable)
        self.guided = nn.Parameter(guided.float().clone(), requires_grad=guided_trainable)
        rows = torch.arange(n_rows).unsqueeze(1)
        self.register_buffer("base_mask", (rows != 0).float(), persistent=False)
        self.register_buffer("guided_mask", ((rows != 0) & (rows < n_items)).float(), persistent=False)
        self.attributes = list(attributes or [f"g{k}" for k in range(guided.shape[1])])
        self.scale = scale  # what the normalized attribute scores were multiplied by

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
    def weight(self) -> torch.Tensor:
        return torch.cat([self.base * self.base_mask, self.guided * self.guided_mask], dim=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Gather the rows asked for: rebuilding the whole [n_items, d] table for each lookup (a BPR
        # batch's positives and negatives) would cost O(catalog) per step.
        return torch.cat([F.embedding(ids, self.base) * F.embedding(ids, self.base_mask),
                          F.embedding(ids, self.guided) * F.embedding(ids, self.guided_mask)], dim=-1)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, base={self.base_dim} (trainable={self.base.requires_grad}), "
                f"guided={self.guided_dim} (trainable={self.guided.requires_grad})")


def build_refined_embedding(options: GuidedOptions, config, dataset, parent_table: nn.Embedding) -> RefinedItemEmbedding:
    """Replace a parent's freshly initialized item table with the refined one (same shape)."""
    n_rows, width = parent_table.weight.shape
    n_items = dataset.item_num
    attributes, raw = item_guided(options, config, dataset) if options.use_guided else ([], np.zeros((n_items, 0)))
    guided = np.zeros((n_rows, len(attributes)))
    guided[1:n_items] = normalize_columns(raw[1:], options.guided_norm)

    base_dim = options.base_dim if options.base_dim is not None else width - len(attributes)
    if base_dim + len(attributes) != width:
        raise ConfigError(
            f"base_dim ({base_dim}) + {len(attributes)} guided attributes must equal the model width {width}"
        )
    if base_dim < 0:
        raise ConfigError(f"{len(attributes)} guided attributes do not fit in the model width {width}")
    base = np.zeros((n_rows, base_dim))
    if options.use_base and base_dim:
        base[1:n_items] = pca_reduce(item_base(options, config, dataset)[1:], base_dim)
        # Special rows (BERT4Rec's mask token) keep the parent's fresh initialization.
        base[n_items:] = parent_table.weight.detach()[n_items:, :base_dim].double().numpy()
    scale = guided_scale(options.guided_scale, base[1:n_items], guided[1:n_items])
    guided *= scale
    return RefinedItemEmbedding(
        torch.from_numpy(base), torch.from_numpy(guided), n_items,
        base_trainable=options.use_base and options.base_trainable,
        guided_trainable=options.guided_trainable,
        attributes=attributes,
        scale=scale,
    )

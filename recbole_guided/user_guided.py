"""User guided vectors ``p_u``: one weight per attribute, adding ``<p_u, g_i>`` to every score."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recbole_guided.data_files import align_rows
from recbole_guided.guided_sources import read_user_guided
from recbole_guided.options import GuidedOptions
from recbole_guided.refined_embedding import center_rows, normalize_columns
from recbole_guided.training_split import training_histories


def history_profiles(histories: list[set[int]], item_guided: np.ndarray) -> np.ndarray:
    """Mean guided vector of each user's training items (zero for a user without any)."""
    profiles = np.zeros((len(histories), item_guided.shape[1]))
    for user, items in enumerate(histories):
        if items:
            profiles[user] = item_guided[sorted(items)].mean(axis=0)
    return profiles


class UserGuidedEmbedding(nn.Module):
    """``p_u`` per user; ``offset`` lifts it into the guided coordinates of the model's width."""

    def __init__(self, profiles: torch.Tensor, base_dim: int, trainable: bool = True):
        super().__init__()
        self.weight = nn.Parameter(profiles.float().clone(), requires_grad=trainable)
        self.register_buffer("initial", profiles.float().clone())  # kept to explain what was learned
        self.base_dim = base_dim

    def offset(self, users: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Zeros on the base coordinates and ``p_u`` on the guided ones, shaped to add to ``output``."""
        lifted = F.pad(self.weight[users], (self.base_dim, 0))
        return lifted.unsqueeze(1) if output.dim() == 3 else lifted


def build_user_guided(options: GuidedOptions, config, train_dataset, items) -> UserGuidedEmbedding | None:
    if not options.user_guided or items.guided_dim == 0:
        return None
    if options.user_guided_init == "history":
        item_guided = (items.guided * items.guided_mask).detach().double().numpy()
        profiles = history_profiles(training_histories(train_dataset), item_guided)
    else:  # "file": LLM-rated user profiles
        path, table = read_user_guided(options, config)
        table.check_attributes(items.attributes, "the item guided attributes", path)
        id2token = train_dataset.field2id_token[train_dataset.uid_field]
        profiles = align_rows(table.tokens, table.values, id2token, str(path), what="user",
                              missing=options.missing_items)
        profiles[1:] = normalize_columns(center_rows(profiles[1:], options.guided_center), options.guided_norm) * items.scale
    return UserGuidedEmbedding(torch.from_numpy(profiles), items.base_dim, options.user_guided_trainable)

"""What the training split contains, per user and per item, from the dataset RecBole hands to models.

After leave-one-out (or any split) a sequential training dataset's rows are training targets with
their training item lists, so validation and test items never appear in it.
"""

from __future__ import annotations

import numpy as np


def _row_items(train_dataset) -> np.ndarray:
    """Each training row's items: its target, then its item list if it has one (0 = list padding)."""
    inter = train_dataset.inter_feat
    items = [inter[train_dataset.iid_field].numpy()[:, None]]
    list_field = train_dataset.iid_field + train_dataset.config["LIST_SUFFIX"]
    if list_field in inter:
        items.append(inter[list_field].numpy())
    return np.hstack(items)


def training_pairs(train_dataset) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``(user id, item id)`` pairs of the training split, sorted by user, then item."""
    items = _row_items(train_dataset)
    users = np.repeat(train_dataset.inter_feat[train_dataset.uid_field].numpy().astype(np.int64), items.shape[1])
    items = items.ravel().astype(np.int64)
    known = items != 0  # list padding
    codes = np.unique(users[known] * train_dataset.item_num + items[known])
    return codes // train_dataset.item_num, codes % train_dataset.item_num


def training_histories(train_dataset) -> list[set[int]]:
    """Item ids each user interacted with in the training split (index = user id)."""
    users, items = training_pairs(train_dataset)
    bounds = np.searchsorted(users, np.arange(train_dataset.user_num + 1))
    return [set(items[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]


def warm_items(train_dataset) -> np.ndarray:
    """Boolean mask over item ids: True for items the training split contains (as a target or in an
    item list). The others are *cold*: new items, or items seen only in validation or test."""
    warm = np.zeros(train_dataset.item_num, dtype=bool)
    warm[_row_items(train_dataset).ravel()] = True
    warm[0] = False  # padding
    return warm

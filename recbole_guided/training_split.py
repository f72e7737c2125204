"""What the training split contains, per user and per item, from the dataset RecBole hands to models.

After leave-one-out (or any split) a sequential training dataset's rows are training targets with
their training item lists, so validation and test items never appear in it.
"""

from __future__ import annotations

import numpy as np


def training_histories(train_dataset) -> list[set[int]]:
    """Item ids each user interacted with in the training split (index = user id)."""
    inter = train_dataset.inter_feat
    users = inter[train_dataset.uid_field].numpy()
    targets = inter[train_dataset.iid_field].numpy()
    lists = inter[train_dataset.iid_field + train_dataset.config["LIST_SUFFIX"]].numpy()
    histories = [set() for _ in range(train_dataset.user_num)]
    for user, target, items in zip(users, targets, lists):
        histories[user].add(int(target))
        histories[user].update(int(i) for i in items if i)
    return histories


def warm_items(train_dataset) -> np.ndarray:
    """Boolean mask over item ids: True for items the training split contains (as a target or in an
    item list). The others are *cold*: new items, or items seen only in validation or test."""
    inter = train_dataset.inter_feat
    warm = np.zeros(train_dataset.item_num, dtype=bool)
    warm[inter[train_dataset.iid_field].numpy()] = True
    list_field = train_dataset.iid_field + train_dataset.config["LIST_SUFFIX"]
    if list_field in inter:
        warm[inter[list_field].numpy().ravel()] = True
    warm[0] = False  # padding
    return warm

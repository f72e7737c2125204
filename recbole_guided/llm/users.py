"""User prompts from training histories only: the same split RecBole trains on, so a user's
validation and test items never reach the LLM."""

from __future__ import annotations

from recbole_guided.pipeline import prepare_data


def training_sequences(train_dataset) -> dict[str, list[str]]:
    """User token -> the item tokens of their training history, in time order.

    Each training row of a sequential split is a prefix of the user's sequence plus its target; the
    longest row per user is their whole (length-capped) training history.
    """
    inter = train_dataset.inter_feat
    uid, iid = train_dataset.uid_field, train_dataset.iid_field
    users = inter[uid].numpy()
    targets = inter[iid].numpy()
    lists = inter[iid + train_dataset.config["LIST_SUFFIX"]].numpy()
    lengths = inter[train_dataset.config["ITEM_LIST_LENGTH_FIELD"]].numpy()
    longest: dict[int, int] = {}
    for row, user in enumerate(users):
        if user not in longest or lengths[row] > lengths[longest[user]]:
            longest[user] = row
    user_tokens = train_dataset.field2id_token[uid]
    item_tokens = train_dataset.field2id_token[iid]
    return {str(user_tokens[u]): [str(item_tokens[i]) for i in lists[row][:lengths[row]]] + [str(item_tokens[targets[row]])]
            for u, row in sorted(longest.items())}


def user_histories(config) -> dict[str, list[str]]:
    """Build the dataset and its split from a RecBole config, and return the training histories."""
    return training_sequences(prepare_data(config).train_data.dataset)


def split_targets(split_data) -> dict[str, str]:
    """User token -> the item they chose in a validation or test split (one row per user)."""
    ds = split_data.dataset
    users = ds.inter_feat[ds.uid_field].numpy()
    items = ds.inter_feat[ds.iid_field].numpy()
    user_tokens, item_tokens = ds.field2id_token[ds.uid_field], ds.field2id_token[ds.iid_field]
    return {str(user_tokens[u]): str(item_tokens[i]) for u, i in zip(users, items)}


def user_splits(config) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Training histories and validation items, from one RecBole split."""
    data = prepare_data(config)
    return training_sequences(data.train_data.dataset), split_targets(data.valid_data)

"""Where the metrics come from, user by user: each test user's rank of their target, the groups
item semantics should matter for, and metrics per group.

* Ranks are computed with RecBole's own batch evaluation (``Trainer._full_sort_batch_eval`` or
  ``_neg_sample_batch_eval``), so they are the ranks behind RecBole's metrics: rank 1 + the number
  of candidates scored strictly higher than the target (padding excluded; in sampled mode the
  candidates are RecBole's sampled negatives).
* ``decompose`` splits a Guided model's score exactly into a base part and one contribution per
  attribute; ``guided_share`` measures how much of a user's ranking the attributes account for.
* Groups, from the training split only: a *tail* target is an item outside the head, the most
  popular items that together take ``head_share`` (80%) of the training interactions; a *short*
  user has a training history no longer than the median test user's (so short and long split the
  users about in half); a *cold* target is an item the training split does not contain at all (a
  new item, or one seen only in validation or test), a *warm* one is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader

from recbole_guided.training_split import training_pairs, warm_items

HEAD_SHARE = 0.8
GROUPS = ("all", "tail", "head", "short", "long", "cold", "warm")


@dataclass
class UserRanks:
    """One row per test case: the user's id, the target's id and its rank (1 = first)."""

    users: np.ndarray
    targets: np.ndarray
    ranks: np.ndarray

    def metric(self, name: str, k: int) -> np.ndarray:
        """Per-user value of ``mrr``, ``ndcg``, ``recall`` or ``hit`` at ``k`` (one target per user)."""
        hit = self.ranks <= k
        if name == "mrr":
            return np.where(hit, 1.0 / self.ranks, 0.0)
        if name == "ndcg":
            return np.where(hit, 1.0 / np.log2(self.ranks + 1.0), 0.0)
        if name in ("recall", "hit"):
            return hit.astype(float)
        raise ValueError(f"metric '{name}': expected mrr, ndcg, recall or hit")


@torch.no_grad()
def target_ranks(trainer, eval_data) -> UserRanks:
    """Every test case's rank under ``trainer.model``, batch by batch as ``Trainer.evaluate`` scores."""
    trainer.model.eval()
    full = isinstance(eval_data, FullSortEvalDataLoader)
    trainer.tot_item_num = eval_data._dataset.item_num
    if full:
        trainer.item_tensor = eval_data._dataset.get_item_feature().to(trainer.device)
    uid = eval_data._dataset.uid_field
    users, targets, ranks = [], [], []
    for batch in eval_data:
        interaction, scores, positive_u, positive_i = (trainer._full_sort_batch_eval if full
                                                       else trainer._neg_sample_batch_eval)(batch)
        if full:
            row_users = interaction[uid]
        else:  # one row per (user, candidate): the user of each score row
            row_users = torch.zeros(scores.shape[0], dtype=torch.long)
            row_users[batch[1].cpu()] = interaction[uid].cpu()
        target_scores = scores[positive_u, positive_i]
        ranks.append((1 + (scores[positive_u] > target_scores[:, None]).sum(dim=1)).cpu().numpy())
        users.append(row_users.cpu()[positive_u.cpu()].numpy())
        targets.append(positive_i.cpu().numpy())
    return UserRanks(np.concatenate(users), np.concatenate(targets), np.concatenate(ranks))


def training_counts(train_dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(item popularity, user history length)`` over the training split, indexed by internal id."""
    users, items = training_pairs(train_dataset)
    return np.bincount(items, minlength=train_dataset.item_num), np.bincount(users, minlength=train_dataset.user_num)


def head_items(popularity: np.ndarray, share: float = HEAD_SHARE) -> np.ndarray:
    """Boolean mask of the most popular items that together take ``share`` of the interactions."""
    order = np.argsort(-popularity, kind="stable")
    cumulative = np.cumsum(popularity[order])
    n_head = int(np.searchsorted(cumulative, share * cumulative[-1]) + 1)
    mask = np.zeros(len(popularity), dtype=bool)
    mask[order[:n_head]] = True
    return mask


def user_groups(ranks: UserRanks, train_dataset) -> dict[str, np.ndarray]:
    """Boolean masks over the test cases, one per group in ``GROUPS``."""
    popularity, history = training_counts(train_dataset)
    head = head_items(popularity)[ranks.targets]
    length = history[ranks.users]
    short = length <= np.median(length)
    warm = warm_items(train_dataset)[ranks.targets]
    return {"all": np.ones(len(ranks.ranks), dtype=bool), "tail": ~head, "head": head, "short": short, "long": ~short,
            "cold": ~warm, "warm": warm}


def group_metrics(ranks: UserRanks, groups: dict[str, np.ndarray], metrics=("mrr", "ndcg", "recall"),
                  ks=(10, 20)) -> dict[str, dict]:
    """``{group: {"users": n, "mrr@10": ..., ...}}``, the mean over the group's test cases."""
    out = {}
    for group, mask in groups.items():
        row = {"users": int(mask.sum())}
        for name in metrics:
            for k in ks:
                values = ranks.metric(name, k)[mask]
                row[f"{name}@{k}"] = float(values.mean()) if len(values) else float("nan")
        out[group] = row
    return out


@dataclass
class RunRanks:
    """A run's test cases, keyed by user token: the target, its rank under each evaluation mode
    (``full``, ``uni100``...) and the groups, as written beside a sweep's CSV row."""

    users: np.ndarray                 # user tokens
    targets: np.ndarray               # item tokens
    ranks: dict[str, np.ndarray]      # mode -> rank per user
    groups: dict[str, np.ndarray]     # group -> bool per user

    def write(self, path) -> None:
        from recbole_guided.atomic_files import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, users=self.users.astype(str), targets=self.targets.astype(str),
                         **{f"rank_{m}": r for m, r in self.ranks.items()},
                         **{f"group_{g}": mask for g, mask in self.groups.items()})

    @classmethod
    def read(cls, path) -> "RunRanks":
        with np.load(path, allow_pickle=False) as npz:
            return cls(npz["users"], npz["targets"],
                       {k[5:]: npz[k] for k in npz.files if k.startswith("rank_")},
                       {k[6:]: npz[k] for k in npz.files if k.startswith("group_")})

    def values(self, mode: str, metric: str, k: int) -> np.ndarray:
        return UserRanks(self.users, self.targets, self.ranks[mode]).metric(metric, k)

    def paired_values(self, other: "RunRanks", mode: str, group: str, metric: str,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
        """This run's and ``other``'s per-user values on the users both have, in ``group`` (this
        run's groups: they come from the training split, which two variants of a seed share);
        ``metric`` ``"rank"``: the target's rank itself."""
        position = {u: i for i, u in enumerate(other.users)}
        both = [i for i, u in enumerate(self.users) if u in position and self.groups[group][i]]
        theirs = [position[self.users[i]] for i in both]
        if metric == "rank":
            return self.ranks[mode][both], other.ranks[mode][theirs]
        return self.values(mode, metric, k)[both], other.values(mode, metric, k)[theirs]


def run_ranks(by_mode: dict[str, UserRanks], groups: dict[str, np.ndarray], dataset) -> RunRanks:
    """Align the modes' ranks by user (each mode's loader may order users differently)."""
    first = next(iter(by_mode.values()))
    order = np.argsort(first.users, kind="stable")
    ranks = {}
    for mode, r in by_mode.items():
        position = {u: k for k, u in enumerate(r.users)}
        ranks[mode] = r.ranks[[position[u] for u in first.users[order]]]
    user_tokens, item_tokens = dataset.field2id_token[dataset.uid_field], dataset.field2id_token[dataset.iid_field]
    return RunRanks(np.asarray(user_tokens)[first.users[order]], np.asarray(item_tokens)[first.targets[order]],
                    ranks, {g: mask[order] for g, mask in groups.items()})


@torch.no_grad()
def decompose(model, interaction) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, contributions)``: ``[B, n_items]`` and ``[B, n_items, m]``, whose sum over the last
    axis plus ``base`` is exactly ``model.full_sort_predict(interaction)``."""
    table = model.item_embedding
    h = model.user_representation(interaction)                  # [B, d]
    weight = table.weight[:model.n_items]                       # [n_items, d]; BERT4Rec's mask row dropped
    b = table.base_dim
    base = h[:, :b] @ weight[:, :b].T
    bias = model.item_bias()
    if bias is not None:
        base = base + bias
    contributions = h[:, None, b:] * weight[None, :, b:]       # [B, n_items, m]
    return base, contributions


@torch.no_grad()
def guided_share(model, eval_data, top: int = 100) -> float:
    """How much of a user's ranking the attributes account for: over the user's ``top`` items, the
    variance of the guided part of the score (``<h_u, g_i>`` with ``p_u`` folded into ``h_u``)
    against the variance of the whole score, averaged over test users. 0 = the attributes do not
    move the ranking; 1 = they decide it alone (the two parts can also offset each other)."""
    model.eval()
    shares = []
    for batch in eval_data:
        interaction = batch[0].to(model.device)
        base, contributions = decompose(model, interaction)
        guided = contributions.sum(-1)
        total = base + guided
        total[:, 0] = -torch.inf  # padding is never ranked
        picked = torch.topk(total, min(top, total.shape[1] - 1), dim=1).indices
        share = guided.gather(1, picked).var(dim=1) / total.gather(1, picked).var(dim=1).clamp_min(1e-12)
        shares.append(share.cpu())
    return float(torch.cat(shares).mean())

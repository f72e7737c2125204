"""Tiny synthetic atomic datasets (RecBole format) with guided and base files, for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recbole_guided.data_files import BaseEmbeddings, GuidedTable

ATTRIBUTES = ["tension", "humour", "romance", "complexity"]
GENRES = ["Action", "Comedy", "Drama", "Horror"]


def item_token(i: int) -> str:
    return f"it{i:03d}"


def make_dataset(root: Path, name: str = "tiny", n_users: int = 24, n_items: int = 30,
                 per_user: int = 12, base_dim: int = 24, seed: int = 0) -> Path:
    """Write ``root/name/name.{inter,item,guided}`` and ``root/name/name-base.npz``.

    Users prefer items whose hidden taste vector matches theirs, so there is signal to learn.
    The guided and base files list items in reverse order of first appearance on purpose.
    """
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    taste = rng.normal(size=(n_items, len(ATTRIBUTES)))
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(n_users):
        pref = rng.normal(size=len(ATTRIBUTES))
        p = np.exp(taste @ pref)
        items = rng.choice(n_items, size=per_user, replace=False, p=p / p.sum())
        lines += [f"u{u:03d}\t{item_token(i)}\t{1000 * u + t}" for t, i in enumerate(items)]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    genres = [" ".join(GENRES[k] for k in range(len(GENRES)) if taste[i, k] > 0.3) or "Drama" for i in range(n_items)]
    (folder / f"{name}.item").write_text(
        "item_id:token\ttitle:token_seq\tclass:token_seq\n"
        + "".join(f"{item_token(i)}\tMovie {i}\t{genres[i]}\n" for i in range(n_items))
    )
    order = list(reversed(range(n_items)))
    scores = 5 + 2 * np.tanh(taste)
    GuidedTable("item_id", [item_token(i) for i in order], ATTRIBUTES, scores[order]).write(folder / f"{name}.guided")
    base = rng.normal(size=(n_items, base_dim)) @ rng.normal(size=(base_dim, base_dim)) * 0.1
    BaseEmbeddings([item_token(i) for i in order], base[order]).write(folder / f"{name}-base.npz")
    return folder


def tiny_config(root: Path, name: str = "tiny", **overrides) -> dict:
    """Settings that train a Guided model on the tiny dataset in seconds."""
    config = {
        "data_path": str(root),
        "checkpoint_dir": str(root / "saved"),
        "log_root": str(root / "log"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "MAX_ITEM_LIST_LENGTH": 8,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "embedding_size": 16,
        "epochs": 1,
        "train_batch_size": 64,
        "eval_batch_size": 64,
        "show_progress": False,
        "metrics": ["Recall", "MRR", "NDCG"],
        "topk": [5],
        "valid_metric": "MRR@5",
        "seed": 7,
        "base_embedding_file": str(root / name / f"{name}-base.npz"),
    }
    config.update(overrides)
    return config


SHOP_USERS = ["A1B2C3"] + [f"A{u:05d}" for u in range(1, 20)]
SHOP_BRANDS = ["Northpeak", "Urbanline", "Trailco"]
SHOP_CATEGORIES = ["Clothing|Shoes|Running", "Clothing|Jackets", "Clothing|Shirts|Casual", "Outdoor|Backpacks"]


def make_shop_dataset(root: Path, n_items: int = 24, per_user: int = 10, seed: int = 0) -> Path:
    """An Amazon-style shop: items keyed ``asin``, ``categories`` as a ``|``-separated list."""
    rng = np.random.default_rng(seed)
    folder = root / "dataset" / "shop"
    folder.mkdir(parents=True, exist_ok=True)
    asins = [f"B{100000 + i:06d}" for i in range(n_items)]
    category = rng.integers(len(SHOP_CATEGORIES), size=n_items)
    lines = ["user_id:token\tasin:token\ttimestamp:float"]
    for u, user in enumerate(SHOP_USERS):
        liked = rng.integers(len(SHOP_CATEGORIES))
        p = np.where(category == liked, 4.0, 1.0)
        items = rng.choice(n_items, size=per_user, replace=False, p=p / p.sum())
        lines += [f"{user}\t{asins[i]}\t{1389052800 + 86400 * (u * per_user + t)}" for t, i in enumerate(items)]
    (folder / "shop.inter").write_text("\n".join(lines) + "\n")
    rows = [f"{asins[i]}\tProduct {i} {SHOP_CATEGORIES[category[i]].split('|')[-1]}\t{SHOP_CATEGORIES[category[i]]}\t"
            f"{SHOP_BRANDS[i % len(SHOP_BRANDS)]}\t{20 + 5 * i:.2f}\n" for i in range(n_items)]
    (folder / "shop.item").write_text("asin:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\tprice:float\n"
                                      + "".join(rows))
    return folder

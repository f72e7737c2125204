"""The new-items protocol: a dataset in which a seeded share of the items is new.

A new item's interactions are all held out of training: none is an input, a target, or part of
the base embeddings and their PCA. A user whose last interaction (the leave-one-out test target)
is a new item keeps that one interaction, as the test target, and loses their other new-item
interactions; every other user loses all of theirs. The test users with a new target are the
*cold* group (``evaluation.user_groups``), the others *warm*; ranking is over all items, which
the copied ``.item`` file keeps in the vocabulary even when no interaction is left.

    python run_recbole_guided.py new-items --dataset=ml-100k [--share=0.1] [--seed=2020]
        -> dataset/ml-100k-new10/ (.inter, .item, .guided and any other files of the source)
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from recbole_guided.atomic_files import AtomicFormat, read_atomic, read_header, write_atomic
from recbole_guided.errors import ConfigError


def new_item_dataset_name(source: str, share: float) -> str:
    return f"{source}-new{round(share * 100)}"


def choose_new_items(items: list[str], share: float, seed: int) -> set[str]:
    """A fixed, seeded ``share`` of the distinct items (uniformly, whatever their popularity)."""
    distinct = sorted(set(items))
    rng = np.random.default_rng(seed)
    return set(rng.choice(distinct, size=round(share * len(distinct)), replace=False).tolist())


def kept_rows(users: list[str], items: list[str], times: np.ndarray, new: set[str]) -> np.ndarray:
    """Row mask: every interaction with an old item, and a user's last interaction if its item is
    new and no other of the user's interactions has the same time as RecBole reads it (a tie would
    leave the order to the sort)."""
    is_new = np.array([i in new for i in items])
    # RecBole holds float fields in float32, which rounds a Unix time to 64 s: times that round to
    # the same value are tied for its sort, whatever the file says.
    times = np.asarray(times, dtype=np.float32)
    user_ids = np.unique(users, return_inverse=True)[1]
    order = np.lexsort((times, user_ids))  # by user, then time
    u, t = user_ids[order], times[order]
    ends = np.flatnonzero(np.r_[u[1:] != u[:-1], True])  # each user's last position
    tied = (ends > 0) & (u[ends - 1] == u[ends]) & (t[ends - 1] == t[ends])
    last = order[ends[~tied]]
    keep = ~is_new
    keep[last[is_new[last]]] = True
    return keep


def copy_side_files(source_dir: Path, source: str, target: Path) -> None:
    """The source's other files (.item, .guided, a text encoder's .npz) under the new name, copied
    again when the source's is newer: item-side files hold no interactions."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source_dir.iterdir():
        if path.is_file() and path.name.startswith(f"{source}.") and path.suffix != ".inter":
            copy = target / (target.name + path.name[len(source):])
            if not copy.is_file() or copy.stat().st_mtime < path.stat().st_mtime:
                shutil.copy2(path, copy)


def make_new_item_dataset(data_path: str | Path, source: str, fmt: AtomicFormat, time_field: str,
                          share: float = 0.1, seed: int = 2020, out_root: str | Path = "dataset") -> Path:
    """Write the protocol's dataset beside the source's (idempotent: an existing one is checked, not rewritten)."""
    if not 0 < share < 1:
        raise ConfigError(f"new-items share {share}: expected a fraction between 0 and 1")
    name = new_item_dataset_name(source, share)
    source_dir, target = Path(data_path) / source, Path(out_root) / name
    manifest = {"source": str(source_dir), "share": share, "seed": seed}
    marker = target / f"{name}.new_items.json"
    copy_side_files(source_dir, source, target)
    if marker.is_file():
        recorded = json.loads(marker.read_text())
        if {k: recorded.get(k) for k in manifest} != manifest:
            raise ConfigError(f"{target} was made with {({k: recorded.get(k) for k in manifest})}, not {manifest}: "
                              f"move it aside to make it again")
        return target
    inter = source_dir / f"{source}.inter"
    header = read_header(inter, fmt)
    table = read_atomic(inter, fmt, what="interaction file")
    for field in (fmt.user_field, fmt.item_field, time_field):
        if field not in header:
            raise ConfigError(f"{inter}: no field '{field}' (the new-items protocol needs users, items and time)")
    users, items = table.columns[fmt.user_field], table.columns[fmt.item_field]
    times = np.array(table.columns[time_field], dtype=float)
    new = choose_new_items(items, share, seed)
    keep = kept_rows(users, items, times, new)
    rows = ([table.columns[f][r] for f in table.fields] for r in np.flatnonzero(keep))
    write_atomic(target / f"{name}.inter", [(f, table.types[f]) for f in table.fields], rows, fmt)
    cold_users = int(sum(1 for r in np.flatnonzero(keep) if items[r] in new))
    manifest.update(new_items=sorted(new), interactions_kept=int(keep.sum()), interactions_dropped=int((~keep).sum()),
                    users_with_new_target=cold_users)
    marker.write_text(json.dumps(manifest, indent=1))
    return target


def main(argv: list[str]) -> int:
    from recbole_guided.config import GuidedConfig

    parser = argparse.ArgumentParser(prog="run_recbole_guided.py new-items", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="space separated YAML files (field names, separators)")
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args(argv)
    config = GuidedConfig("SASRec", args.dataset, args.config_files.split() if args.config_files else None)
    source_dir = Path(config["data_path"])
    target = make_new_item_dataset(source_dir.parent, args.dataset, AtomicFormat.from_config(config),
                                   config["TIME_FIELD"], args.share, args.seed)
    name = target.name
    manifest = json.loads((target / f"{name}.new_items.json").read_text())
    print(f"{target}: {len(manifest['new_items'])} new items, {manifest['interactions_dropped']} interactions held "
          f"out, {manifest['users_with_new_target']} users whose test target is new")
    return 0

"""New items in a trained model, without retraining: the day an LLM has rated them.

    python run_recbole_guided.py add-items --model_file=saved/GuidedSASRec-....pth [--output=...]

The shop adds the new items to its ``.item`` and ``.guided`` files (``score`` asks the LLM about
the new items only: the others are in its cache), optionally re-runs ``embed-items``, and runs
this. It rebuilds the model on today's files and carries the trained weights over by token:

* every item the checkpoint knew keeps its trained row (and BERT4Rec bias): scores of the old
  catalog do not change;
* a new item's guided part is its ratings under the *training-time* normalization (recovered,
  per attribute, from the old items' file scores and trained rows, so the file's new statistics
  do not shift it); its base part is placed like any cold item's
  (``RefinedItemEmbedding.place_cold_rows``: the ridge map onto the trained warm rows, from its
  attributes and, if the base file has it, its text vector);
* the network and the user vectors are the checkpoint's.

The interactions must be the ones the model was trained on (same users): new interactions mean
new training, and that is a rerun of ``train``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from recbole_guided.compat import item_tokens, load_checkpoint, save_checkpoint, user_tokens
from recbole_guided.config import GuidedConfig, checkpoint_config, is_guided
from recbole_guided.errors import CheckpointError
from recbole_guided.pipeline import build_model, prepare_data

ROW_PARAMETERS = ("item_embedding.base", "item_embedding.guided", "output_bias")  # indexed by item id


def with_all_catalog_items(external: dict, item_field: str) -> dict:
    """The config with the ``.item`` file's ids loaded: a new item has no interaction to bring it in."""
    load_col = dict(external.get("load_col") or {"inter": None})
    item_cols = list(load_col.get("item") or [])
    load_col["item"] = item_cols if item_field in item_cols else [item_field, *item_cols]
    return {**external, "load_col": load_col}


def training_time_guided(new_raw: np.ndarray, old_raw: np.ndarray, old_guided: np.ndarray) -> np.ndarray:
    """Per attribute, the affine map (normalization and scale) that took the file's scores to the
    trained guided rows, applied to new items' scores. Exact for a frozen guided part."""
    out = np.zeros((len(new_raw), old_guided.shape[1]))
    for a in range(old_guided.shape[1]):
        if np.ptp(old_raw[:, a]) == 0:  # a constant attribute was normalized to 0
            continue
        slope, intercept = np.polyfit(old_raw[:, a], old_guided[:, a], 1)
        out[:, a] = slope * new_raw[:, a] + intercept
    return out


def add_items(model_file, output=None) -> tuple[Path, list[str]]:
    """Write a checkpoint of the trained model over today's catalog; return it and the new tokens."""
    checkpoint = load_checkpoint(model_file)
    if not is_guided(checkpoint["model"]):
        raise CheckpointError(f"{model_file}: {checkpoint['model']} has no item attributes to place new items with")
    # the training run's item field, from its stored config (no second config to build)
    external = with_all_catalog_items(checkpoint_config(checkpoint), json.loads(checkpoint["config"])["ITEM_ID_FIELD"])
    config = GuidedConfig(checkpoint["model"], checkpoint["dataset"], config_dict=external)
    data = prepare_data(config)
    if "user_tokens" in checkpoint and checkpoint["user_tokens"] != user_tokens(data.dataset):
        raise CheckpointError(f"{model_file}: the users in the interaction file changed since training; "
                              "new interactions need a new training run (run_recbole_guided.py train)")
    model = build_model(config, data)  # today's catalog: new items get cold rows by the build rule
    old_tokens, new_tokens = checkpoint["item_tokens"], item_tokens(data.dataset)
    unknown = sorted(set(old_tokens) - set(new_tokens))
    if unknown:
        raise CheckpointError(f"{model_file}: items {unknown[:5]} of the checkpoint are gone from today's files")
    old_row = {t: k for k, t in enumerate(old_tokens)}
    added = [i for i, t in enumerate(new_tokens) if t not in old_row]
    keep_new = np.array([old_row[t] for t in new_tokens if t in old_row])
    keep_ids = np.array([i for i, t in enumerate(new_tokens) if t in old_row])
    state = model.state_dict()
    for key, trained in checkpoint["state_dict"].items():
        if key not in ROW_PARAMETERS:
            if state[key].shape != trained.shape:
                raise CheckpointError(f"{model_file}: {key} has shape {tuple(trained.shape)}, today's model "
                                      f"{tuple(state[key].shape)}: the users or settings changed since training")
            state[key] = trained
            continue
        rows = state[key].clone()
        rows[keep_ids] = trained[keep_new]
        if rows.shape[0] > len(new_tokens):  # BERT4Rec's mask token, after the items
            rows[len(new_tokens):] = trained[len(old_tokens):]
        state[key] = rows
    if added:
        state["item_embedding.guided"] = _new_guided_rows(model, state, keep_ids, np.array(added), data.dataset.item_num)
    model.load_state_dict(state)
    model.eval()  # places every cold row, the new items' included, from the trained warm rows
    output = Path(output) if output else Path(model_file).with_name(Path(model_file).stem + "-items.pth")
    carried = {k: v for k, v in checkpoint.items() if k != "format"}  # save_checkpoint writes the format
    save_checkpoint(output, **{**carried, "item_tokens": new_tokens, "external_config": json.dumps(external),
                               "state_dict": model.state_dict(), "added_items": [new_tokens[i] for i in added]})
    return output, [new_tokens[i] for i in added]


def _new_guided_rows(model, state: dict, old_ids: np.ndarray, added: np.ndarray, n_items: int) -> torch.Tensor:
    """The trained guided rows, with the added items' ratings under the training-time normalization."""
    old_ids = old_ids[(old_ids > 0) & (old_ids < n_items)]  # real items: not padding, not a mask
    build = model.item_embedding.guided.detach().double().numpy()  # today's normalization
    guided = state["item_embedding.guided"].double().numpy()
    if guided.shape[1]:
        guided[added] = training_time_guided(build[added], build[old_ids], guided[old_ids])
    return torch.from_numpy(guided).to(state["item_embedding.guided"].dtype)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run_recbole_guided.py add-items", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_file", required=True)
    parser.add_argument("--output", default=None, help="default: <model_file stem>-items.pth beside it")
    args = parser.parse_args(argv)
    output, added = add_items(args.model_file, args.output)
    print(f"{output}: {len(added)} new item(s) placed" + (f": {', '.join(added[:10])}" if added else "")
          + ("..." if len(added) > 10 else ""))
    return 0

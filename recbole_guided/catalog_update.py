"""New items in a trained model, without retraining: the day an LLM has rated them.

    python run_recbole_guided.py add-items --model_file=saved/GuidedSASRec-....pth [--output=...]

The shop adds the new items to its ``.item`` and ``.guided`` files (``score`` asks the LLM about
the new items only: the others are in its cache), optionally re-runs ``embed-items``, and runs
this. It rebuilds the model on today's files and carries the trained weights over by token:

* every item the checkpoint knew keeps its trained row (and BERT4Rec bias): scores of the old
  catalog do not change;
* a new item's guided part is its ratings under the *training-time* normalization (recovered,
  per attribute, from the old items' file scores and trained rows, so the file's new statistics
  do not shift it), and its base part is the ridge map from attributes to the *trained* base rows
  of warm items (``cold_items: attributes``), or their mean (``mean``), or the PCA of its text
  vector when the base file has one;
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

from recbole_guided.compat import item_tokens, load_checkpoint, save_checkpoint
from recbole_guided.config import GuidedConfig, is_guided
from recbole_guided.errors import CheckpointError
from recbole_guided.guided_sources import item_base
from recbole_guided.options import GuidedOptions
from recbole_guided.pipeline import build_model, prepare_data
from recbole_guided.refined_embedding import predict_base
from recbole_guided.training_split import warm_items

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
    external = json.loads(checkpoint["external_config"])
    probe = GuidedConfig(checkpoint["model"], checkpoint["dataset"], config_dict=external)
    external = with_all_catalog_items(external, probe["ITEM_ID_FIELD"])
    config = GuidedConfig(checkpoint["model"], checkpoint["dataset"], config_dict=external)
    data = prepare_data(config)
    if "user_tokens" in checkpoint and checkpoint["user_tokens"] != [str(t) for t in
                                                                     data.dataset.field2id_token[data.dataset.uid_field]]:
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
        _place_new_items(model, state, config, data, keep_ids, np.array(added))
    output = Path(output) if output else Path(model_file).with_name(Path(model_file).stem + "-items.pth")
    carried = {k: v for k, v in checkpoint.items() if k != "format"}  # save_checkpoint writes the format
    save_checkpoint(output, **{**carried, "item_tokens": new_tokens, "external_config": json.dumps(external),
                               "state_dict": state, "added_items": [new_tokens[i] for i in added]})
    return output, [new_tokens[i] for i in added]


def _place_new_items(model, state: dict, config, data, old_ids: np.ndarray, added: np.ndarray) -> None:
    """Guided and base rows of the added items, from the trained rows of the old ones."""
    options = GuidedOptions.from_config(config)
    table = model.item_embedding
    old_ids = old_ids[(old_ids > 0) & (old_ids < data.dataset.item_num)]  # real items: not padding, not a mask
    build_guided = table.guided.detach().double().numpy()  # today's normalization, before the carry-over
    guided = state["item_embedding.guided"].double().numpy()
    if table.guided_dim:
        guided[added] = training_time_guided(build_guided[added], build_guided[old_ids], guided[old_ids])
    base = state["item_embedding.base"].double().numpy()
    if table.base_dim and options.use_base:
        n_items = data.dataset.item_num
        vectors = item_base(options, config, data.train_data.dataset,
                            optional=table.frozen_rows.squeeze(1).numpy()[:n_items])
        from_file = np.zeros(len(base), dtype=bool)  # a text encoder's vector: kept as the build projected it
        from_file[:n_items] = ~np.isnan(vectors).any(axis=1)
        warm = np.zeros(len(base), dtype=bool)
        warm[old_ids] = warm_items(data.train_data.dataset)[old_ids]
        rule = options.cold_items if options.cold_items != "train" else "mean"
        predicted = predict_base(guided / (table.scale or 1.0), base, warm, rule)
        base[added] = np.where(from_file[added, None], base[added], predicted[added])
    state["item_embedding.guided"] = torch.from_numpy(guided).to(state["item_embedding.guided"].dtype)
    state["item_embedding.base"] = torch.from_numpy(base).to(state["item_embedding.base"].dtype)


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

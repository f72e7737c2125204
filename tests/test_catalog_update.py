"""add-items: new catalog items placed in a trained model, without retraining."""

import shutil

import numpy as np
import pytest
import torch
from synthetic import tiny_config

from recbole_guided.catalog_update import add_items
from recbole_guided.cli import main
from recbole_guided.compat import load_checkpoint
from recbole_guided.data_files import GuidedTable
from recbole_guided.errors import CheckpointError
from recbole_guided.quick_start import load_guided_model, run_recbole_guided

NEW = {"new001": "it005", "new002": "it017"}  # a new item rated exactly like an old one


def add_to_catalog(folder):
    """The shop's day: the new items go into the .item file and get their LLM ratings."""
    guided = GuidedTable.read(folder / "tiny.guided")
    rows = [guided.tokens.index(old) for old in NEW.values()]
    GuidedTable("item_id", guided.tokens + list(NEW), guided.attributes,
                np.vstack([guided.values, guided.values[rows]])).write(folder / "tiny.guided")
    with open(folder / "tiny.item", "a") as f:
        f.writelines(f"{token}\tNew movie {token}\tDrama\n" for token in NEW)


@pytest.fixture(params=["GuidedSASRec", "GuidedBERT4Rec"])
def trained(request, tiny_root, tmp_path):
    shutil.copytree(tiny_root / "tiny", tmp_path / "tiny")
    result = run_recbole_guided(request.param, "tiny", None, tiny_config(tmp_path), saved=True)
    return request.param, tmp_path, result["saved_model_file"]


def scores_by_token(model, dataset, test_data):
    model.eval()
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(batch).view(len(batch), -1)
    tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
    users = [str(dataset.field2id_token[dataset.uid_field][u]) for u in batch[dataset.uid_field].tolist()]
    return {(u, t): float(scores[r, i]) for r, u in enumerate(users) for i, t in enumerate(tokens) if i}


def test_new_items_join_a_trained_model_and_the_old_catalog_scores_stay(trained):
    name, root, model_file = trained
    add_to_catalog(root / "tiny")
    output = root / "with-new-items.pth"
    assert main(["add-items", f"--model_file={model_file}", f"--output={output}"]) == 0  # as a shop runs it
    assert sorted(load_checkpoint(output)["added_items"]) == sorted(NEW)

    _, before, dataset0, _, _, test0 = load_guided_model(model_file)
    _, after, dataset1, _, _, test1 = load_guided_model(output)
    old, new = scores_by_token(before, dataset0, test0), scores_by_token(after, dataset1, test1)
    shared = [key for key in old]
    np.testing.assert_allclose([new[k] for k in shared], [old[k] for k in shared], atol=1e-5)
    assert {t for _, t in new} - {t for _, t in old} == set(NEW)  # ranked beside every old item

    # Rated like an old item: the same guided row under the training-time normalization.
    table = after.item_embedding
    ids = {str(t): i for i, t in enumerate(dataset1.field2id_token[dataset1.iid_field])}
    for token, twin in NEW.items():
        np.testing.assert_allclose(table.guided[ids[token]].detach(), table.guided[ids[twin]].detach(), atol=1e-5)
        assert bool(table.frozen_rows[ids[token]])  # no training signal: frozen like any cold row


def test_new_interactions_need_a_new_training_run(trained):
    _, root, model_file = trained
    with open(root / "tiny" / "tiny.inter", "a") as f:
        f.write("u999\tit001\t1\nu999\tit002\t2\nu999\tit003\t3\n")
    with pytest.raises(CheckpointError, match="users in the interaction file changed"):
        add_items(model_file)


def test_add_items_rebuilds_with_the_options_the_model_was_trained_with(trained):
    import json

    from recbole_guided.compat import save_checkpoint

    _, root, model_file = trained
    checkpoint = load_checkpoint(model_file)
    # written before guided_center existed (raw ratings): today's default must not re-center them
    stored = {k: v for k, v in json.loads(checkpoint["config"]).items() if k != "guided_center"}
    save_checkpoint(model_file, **{**checkpoint, "config": json.dumps(stored)})
    add_to_catalog(root / "tiny")
    output, _ = add_items(model_file, root / "with-new-items.pth")
    assert json.loads(load_checkpoint(output)["external_config"])["guided_center"] == "none"

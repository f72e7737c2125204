"""The RecBole options a sequential user sets, each with all three Guided models and their parents
(tiny data, one epoch), in the manner of RecBole-GNN's tests/test_model.py: every case trains the
parent and the Guided model through ``run_recbole_guided``, evaluates both, and checks that the
Guided model's scores come from its refined table."""

import numpy as np
import pytest
import torch
from synthetic import ATTRIBUTES, item_token, tiny_config

from recbole_guided.data_files import GuidedTable
from recbole_guided.evaluation import decompose
from recbole_guided.quick_start import load_guided_model, run_recbole_guided
from recbole_guided.refined_embedding import RefinedItemEmbedding

MODELS = ["GuidedSASRec", "GuidedBERT4Rec", "GuidedGRU4Rec"]
PARENT = {"GuidedSASRec": "SASRec", "GuidedBERT4Rec": "BERT4Rec", "GuidedGRU4Rec": "GRU4Rec"}
OTHER_BASE = {"GuidedSASRec": "GRU4Rec", "GuidedBERT4Rec": "SASRec", "GuidedGRU4Rec": "SASRec"}
METRICS = {"recall@5", "mrr@5", "ndcg@5"}

pytestmark = pytest.mark.slow


def quick_test(tiny_root, tmp_path, model, **options):
    settings = tiny_config(tiny_root, checkpoint_dir=str(tmp_path / "saved"), **options)
    if "base_embedding_file" not in options:
        settings.pop("base_embedding_file")  # the base stage trains the parent and exports its table
    result = run_recbole_guided(model, "tiny", config_dict=settings)
    assert set(result["test_result"]) == METRICS and set(result["best_valid_result"]) == METRICS
    assert all(0.0 <= v <= 1.0 for v in result["test_result"].values())
    scores_come_from_the_refined_table(result["saved_model_file"])
    return result


@torch.no_grad()
def scores_come_from_the_refined_table(model_file):
    """Full ranking and sampled scoring are the user representation against the refined rows."""
    config, model, dataset, _, _, test_data = load_guided_model(model_file)
    assert isinstance(model.item_embedding, RefinedItemEmbedding)
    inter = test_data.dataset.inter_feat[:4].to(model.device)
    base, contributions = decompose(model, inter)
    full = model.full_sort_predict(inter).view(len(inter), -1)
    torch.testing.assert_close(base + contributions.sum(-1), full, rtol=1e-4, atol=1e-4)
    sampled = model.predict(inter)  # what uni100 / pop100 evaluation calls
    torch.testing.assert_close(sampled, full[torch.arange(len(inter)), inter[model.ITEM_ID]], rtol=1e-4, atol=1e-4)


def assert_compared_with(result, parent):
    assert result["baseline"]["model"] == parent
    assert set(result["baseline"]["test_result"]) == METRICS


@pytest.mark.parametrize("model", MODELS)
def test_bpr_with_negative_sampling(tiny_root, tmp_path, model):
    result = quick_test(tiny_root, tmp_path, model, loss_type="BPR")
    assert_compared_with(result, PARENT[model])


@pytest.mark.parametrize("mode", ["uni100", "pop100", "full"])
@pytest.mark.parametrize("model", MODELS)
def test_sampled_and_full_evaluation(tiny_root, tmp_path, model, mode):
    eval_args = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": mode}
    result = quick_test(tiny_root, tmp_path, model, eval_args=eval_args)
    assert_compared_with(result, PARENT[model])
    expected = "full ranking over all items" if mode == "full" else "the target against 100 negatives drawn"
    assert expected in result["evaluation"]


@pytest.mark.parametrize("model", MODELS)
def test_random_split(tiny_root, tmp_path, model):
    eval_args = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full"}
    result = quick_test(tiny_root, tmp_path, model, eval_args=eval_args)
    assert_compared_with(result, PARENT[model])
    assert "random split 0.8/0.1/0.1" in result["evaluation"]


@pytest.mark.parametrize("model", MODELS)
def test_longer_sequences_and_another_width_with_explicit_base_dim(tiny_root, tmp_path, model):
    result = quick_test(tiny_root, tmp_path, model, MAX_ITEM_LIST_LENGTH=50, hidden_size=24, embedding_size=24,
                        base_dim=24 - len(ATTRIBUTES))
    assert_compared_with(result, PARENT[model])
    _, guided, *_ = load_guided_model(result["saved_model_file"])
    assert (guided.item_embedding.base_dim, guided.item_embedding.guided_dim) == (20, len(ATTRIBUTES))


@pytest.mark.parametrize("model", MODELS)
def test_base_model_other_than_the_parent(tiny_root, tmp_path, model):
    result = quick_test(tiny_root, tmp_path, model, base_model=OTHER_BASE[model])
    assert_compared_with(result, OTHER_BASE[model])  # the table's source is what the Guided model is set against


@pytest.mark.parametrize("model", MODELS)
def test_given_base_embedding_file_trains_no_parent_unless_asked(tiny_root, tmp_path, model):
    base_file = str(tiny_root / "tiny" / "tiny-base.npz")
    result = quick_test(tiny_root, tmp_path, model, base_embedding_file=base_file)
    assert result["baseline"] is None and not (tmp_path / "saved" / "base").exists()
    result = quick_test(tiny_root, tmp_path, model, base_embedding_file=base_file, compare_with_parent=True)
    assert_compared_with(result, PARENT[model])


@pytest.mark.parametrize("model", MODELS)
def test_user_guided_vectors_from_a_file(tiny_root, tmp_path, model):
    users = [f"u{u:03d}" for u in range(24)]
    values = np.random.default_rng(0).uniform(1, 9, size=(len(users), len(ATTRIBUTES)))
    path = tmp_path / "tiny.uguided"
    GuidedTable("user_id", users, ATTRIBUTES, values).write(path)
    result = quick_test(tiny_root, tmp_path, model, user_guided_init="file", user_guided_file=str(path))
    assert_compared_with(result, PARENT[model])


@pytest.mark.parametrize("policy", ["mean", "zero"])
@pytest.mark.parametrize("model", MODELS)
def test_items_missing_from_the_guided_file_are_filled(tiny_root, tmp_path, model, policy):
    full = GuidedTable.read(tiny_root / "tiny" / "tiny.guided")
    keep = [k for k, t in enumerate(full.tokens) if t not in {item_token(0), item_token(1)}]
    partial = tmp_path / "partial.guided"
    GuidedTable("item_id", [full.tokens[k] for k in keep], ATTRIBUTES, full.values[keep]).write(partial)
    # zero: a raw 0 on every attribute; centered per item it would be no deviation at all, so the
    # raw scale is what shows where the fill lands (guided_center: none)
    center = {"guided_center": "none"} if policy == "zero" else {}
    result = quick_test(tiny_root, tmp_path, model, guided_file=str(partial), missing_items=policy, **center)
    assert_compared_with(result, PARENT[model])
    _, guided, dataset, *_ = load_guided_model(result["saved_model_file"])
    row = guided.item_embedding.guided[dataset.token2id("item_id", item_token(0))]
    if policy == "mean":  # the mean raw score is exactly the z-scored zero
        torch.testing.assert_close(row, torch.zeros_like(row), atol=1e-5, rtol=0)
    else:  # a raw 0 lies below every rating on the 1..9-like scale: negative once z-scored
        assert (row < 0).all()
    rows = guided.item_embedding.guided[1:dataset.item_num]
    assert torch.isfinite(rows).all() and torch.count_nonzero(guided.item_embedding.weight[0]) == 0

"""The three Guided models: refined table shape, alignment by token, special rows, training."""

import numpy as np
import pytest
import torch
import yaml
from conftest import prepare
from recbole.utils import init_seed
from synthetic import ATTRIBUTES

from recbole_guided.compat import SafeTrainer
from recbole_guided.config import GuidedConfig, parent_model
from recbole_guided.errors import ConfigError
from recbole_guided.models import GUIDED_MODELS
from recbole_guided.options import PLUGIN_KEYS
from recbole_guided.resources import PROPERTIES
from recbole_guided.data_files import BaseEmbeddings, GuidedTable
from recbole_guided.refined_embedding import RefinedItemEmbedding, center_rows, normalize_columns, pca_reduce

MODELS = ["GuidedSASRec", "GuidedBERT4Rec", "GuidedGRU4Rec"]
WIDTH_KEY = {"GuidedSASRec": "hidden_size", "GuidedBERT4Rec": "hidden_size", "GuidedGRU4Rec": "embedding_size"}


@pytest.mark.parametrize("name", MODELS)
def test_yaml_naming_only_the_model_trains_and_evaluates(tiny_root, tmp_path, name):
    from recbole_guided.quick_start import train_and_evaluate

    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(f"model: {name}\ndataset: tiny\n")
    config, *_ = prepare(None, tiny_root, config_files=[str(yaml_file)])
    assert config["model"] == name
    result = train_and_evaluate(config)
    assert set(result["test_result"]) == {"recall@5", "mrr@5", "ndcg@5"}
    assert 0.0 <= result["test_result"]["recall@5"] <= 1.0
    assert result["epochs_trained"] == 1 and result["seconds_per_epoch"] > 0


@pytest.mark.parametrize("name", MODELS)
def test_refined_table_has_parent_width_and_aligns_by_token(tiny_root, name):
    config, dataset, _, model = prepare(name, tiny_root, user_guided=False)
    table = model.item_embedding
    assert isinstance(table, RefinedItemEmbedding)
    assert table.embedding_dim == config[WIDTH_KEY[name]] == 16
    assert table.guided_dim == len(ATTRIBUTES) and table.attributes == ATTRIBUTES

    # The guided file lists items in another order than the dataset: rows must follow tokens.
    guided = GuidedTable.read(tiny_root / "tiny" / "tiny.guided")
    id2token = dataset.field2id_token[dataset.iid_field]
    # every file item is in the dataset; the scale ('auto' by default) is one factor for the whole part
    expected = normalize_columns(center_rows(guided.values, "item"), "zscore") * table.scale
    row_of = {t: i for i, t in enumerate(guided.tokens)}
    for item_id in range(1, dataset.item_num):
        np.testing.assert_allclose(
            table.weight[item_id, table.base_dim:].detach().numpy(), expected[row_of[id2token[item_id]]], rtol=1e-5
        )

    # Base part: the PCA of the file's vectors, row by row (compared through dot products,
    # which do not depend on the sign SVD picks for each axis).
    base = BaseEmbeddings.read(tiny_root / "tiny" / "tiny-base.npz")
    reduced = pca_reduce(base.vectors, table.base_dim)
    order = [base.tokens.index(id2token[i]) for i in range(1, dataset.item_num)]
    ours = table.weight[1 : dataset.item_num, : table.base_dim].detach().double().numpy()
    np.testing.assert_allclose(ours @ ours.T, reduced[order] @ reduced[order].T, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_frozen_parts_stay_and_trainable_parts_move_and_pad_stays_zero(tiny_root, name):
    config, dataset, (train, valid, _), model = prepare(name, tiny_root)
    table = model.item_embedding
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = SafeTrainer(config, model, dataset)
    trainer._train_epoch(train, 0)
    after = dict(model.named_parameters())
    assert not table.guided.requires_grad
    assert torch.equal(before["item_embedding.guided"], after["item_embedding.guided"])
    assert table.base.requires_grad
    assert not torch.equal(before["item_embedding.base"], after["item_embedding.base"])
    assert not torch.equal(before["user_guided.weight"], after["user_guided.weight"])
    assert torch.count_nonzero(table.weight[0]) == 0


def test_options_freeze_base_and_train_guided(tiny_root):
    config, dataset, (train, *_), model = prepare("GuidedSASRec", tiny_root, base_trainable=False, guided_trainable=True)
    table = model.item_embedding
    base0, guided0 = table.base.detach().clone(), table.guided.detach().clone()
    SafeTrainer(config, model, dataset)._train_epoch(train, 0)
    assert torch.equal(table.base, base0)
    assert not torch.equal(table.guided, guided0)


def test_bert4rec_mask_row_has_zero_guided_part_and_trainable_base(tiny_root):
    config, dataset, (train, *_), model = prepare("GuidedBERT4Rec", tiny_root)
    table = model.item_embedding
    mask = model.mask_token
    assert mask == dataset.item_num and table.num_embeddings == dataset.item_num + 1
    assert torch.count_nonzero(table.weight[mask, table.base_dim:]) == 0
    assert torch.count_nonzero(table.weight[mask, : table.base_dim]) > 0
    # The last real item keeps its own row (no shift when the mask row is appended).
    assert torch.count_nonzero(table.weight[mask - 1, table.base_dim:]) > 0
    mask_base0 = table.weight[mask, : table.base_dim].detach().clone()
    SafeTrainer(config, model, dataset)._train_epoch(train, 0)
    assert not torch.equal(table.weight[mask, : table.base_dim], mask_base0)
    assert torch.count_nonzero(table.weight[mask, table.base_dim:]) == 0
    assert torch.count_nonzero(table.weight[0]) == 0


def test_pca_keeps_the_most_variance_like_a_direct_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10)) @ np.diag([5, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1])
    reduced = pca_reduce(x, 3)
    singular = np.linalg.svd(x - x.mean(0), compute_uv=False)
    np.testing.assert_allclose((reduced**2).sum(), (singular[:3] ** 2).sum(), rtol=1e-9)
    np.testing.assert_allclose(np.sort(reduced.var(0))[::-1], singular[:3] ** 2 / 200, rtol=1e-9)


def test_reduced_base_only_takes_full_width(tiny_root):
    _, _, _, model = prepare("GuidedSASRec", tiny_root, use_guided=False)
    assert model.item_embedding.base_dim == 16 and model.item_embedding.guided_dim == 0
    assert model.user_guided is None


@pytest.mark.parametrize("source,attributes", [("random", 4), ("metadata", 4)])
def test_ablation_sources_replace_the_guided_part(tiny_root, source, attributes):
    _, _, _, model = prepare("GuidedSASRec", tiny_root, guided_source=source, metadata_field="class")
    table = model.item_embedding
    assert table.guided_dim == attributes
    if source == "metadata":
        assert table.attributes == ["Action", "Comedy", "Drama", "Horror"]


def test_metadata_without_a_field_names_the_item_files_fields(tiny_root):
    with pytest.raises(ConfigError, match=r"needs metadata_field.*\['title', 'class'\]"):
        prepare("GuidedSASRec", tiny_root, guided_source="metadata")


@pytest.mark.parametrize("name", MODELS)
def test_a_guided_model_gets_its_parents_defaults_and_the_plugin_keys(tiny_root, name):
    """One source of truth: the YAMLs copy no parent setting; the config still has them all."""
    import recbole

    parent = parent_model(name)
    assert parent == name.removeprefix("Guided") and GUIDED_MODELS[name].parent_class().__name__ == parent
    recbole_props = __import__("pathlib").Path(recbole.__file__).parent / "properties" / "model"
    parent_defaults = yaml.safe_load((recbole_props / f"{parent}.yaml").read_text())
    ours = yaml.safe_load((PROPERTIES / "model" / f"{name}.yaml").read_text()) or {}
    assert not set(ours) & set(parent_defaults)
    assert set(yaml.safe_load((PROPERTIES / "model" / "guided.yaml").read_text())) == set(PLUGIN_KEYS)
    guided = GuidedConfig(name, "ml-100k")
    assert {k: guided[k] for k in parent_defaults} == {k: GuidedConfig(parent, "ml-100k")[k] for k in parent_defaults}
    assert all(k in guided.final_config_dict for k in PLUGIN_KEYS)


def test_a_fourth_guided_model_is_one_class():
    from recbole.model.sequential_recommender import NARM

    from recbole_guided.config import get_model
    from recbole_guided.models import GuidedRecommender

    class GuidedNARM(GuidedRecommender, NARM):
        """NARM over refined item embeddings."""

    try:
        assert get_model("GuidedNARM") is GuidedNARM and parent_model("GuidedNARM") == "NARM"
        config = GuidedConfig("GuidedNARM", "ml-100k")
        assert config["embedding_size"] == GuidedConfig("NARM", "ml-100k")["embedding_size"]
        assert config["guided_source"] == "file"
    finally:
        del GUIDED_MODELS["GuidedNARM"]


@pytest.mark.parametrize("key,value", [("guided_source", "llm"), ("guided_norm", "l2"), ("missing_items", "drop"),
                                       ("user_guided_init", "random"), ("guided_scale", "big"), ("base_dim", -1)])
def test_bad_plugin_values_fail_before_any_file_is_read(tmp_path, key, value):
    with pytest.raises(ConfigError, match=key):
        GuidedConfig("GuidedSASRec", "ml-100k", config_dict={key: value, "guided_file": str(tmp_path / "absent")})


def test_same_seed_gives_the_parent_network_the_same_initialization(tiny_root):
    """Apart from the item table, a Guided model starts exactly where its parent does."""
    from recbole.model.sequential_recommender import SASRec

    config, _, (train, *_), guided = prepare("GuidedSASRec", tiny_root)
    init_seed(config["seed"], config["reproducibility"])
    parent = SASRec(config, train._dataset)
    theirs = parent.state_dict()
    for key, value in guided.state_dict().items():
        if key.startswith("position_embedding") or key.startswith("trm_encoder"):
            assert torch.equal(value, theirs[key]), key


@pytest.mark.parametrize("option", ["auto", 0.5])
def test_guided_scale_auto_matches_the_base_parts_spread(tiny_root, option):
    _, dataset, _, model = prepare("GuidedSASRec", tiny_root, guided_scale=option)
    table = model.item_embedding
    rows = table.weight[1:dataset.item_num].detach().double()
    base_spread = rows[:, :table.base_dim].std(dim=0, unbiased=False).mean()
    guided_spread = rows[:, table.base_dim:].std(dim=0, unbiased=False).mean()
    expected = base_spread if option == "auto" else 0.5  # z-scored columns have spread 1 before scaling
    assert float(guided_spread) == pytest.approx(float(expected), rel=1e-4)
    assert table.scale == pytest.approx(float(expected), rel=1e-4)


def test_importing_the_plugin_undoes_recbole_turning_on_anomaly_detection():
    """RecBole's sine.py turns autograd anomaly detection on when its sequential models are imported
    (a stack trace per op: training ran 1.5 to 2 times slower); the plugin turns it off again."""
    import subprocess
    import sys

    code = ("import torch, recbole.model.sequential_recommender; before = torch.is_anomaly_enabled(); "
            "import recbole_guided; print(before, torch.is_anomaly_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_pca_of_fewer_items_than_dimensions_pads_the_missing_axes_with_zeros():
    x = np.random.default_rng(0).normal(size=(5, 10))
    reduced = pca_reduce(x, 8)
    assert reduced.shape == (5, 8) and not reduced[:, 5:].any()
    np.testing.assert_allclose(reduced[:, :5] @ reduced[:, :5].T, pca_reduce(x, 5) @ pca_reduce(x, 5).T)


def test_item_centering_removes_the_raters_halo_and_none_keeps_the_ratings(tiny_root, tmp_path):
    """A rater that scores an item higher on every attribute alike (its halo) changes nothing."""
    guided = GuidedTable.read(tiny_root / "tiny" / "tiny.guided")
    halo = np.random.default_rng(0).normal(size=(len(guided.tokens), 1))
    shifted = tmp_path / "halo.guided"
    GuidedTable("item_id", guided.tokens, guided.attributes, guided.values + halo).write(shifted)
    _, _, _, plain = prepare("GuidedSASRec", tiny_root)
    _, _, _, with_halo = prepare("GuidedSASRec", tiny_root, guided_file=str(shifted))
    np.testing.assert_allclose(with_halo.item_embedding.guided.detach(), plain.item_embedding.guided.detach(), atol=1e-5)
    _, _, _, uncentered = prepare("GuidedSASRec", tiny_root, guided_file=str(shifted), guided_center="none")
    assert not np.allclose(uncentered.item_embedding.guided.detach(), plain.item_embedding.guided.detach(), atol=1e-3)

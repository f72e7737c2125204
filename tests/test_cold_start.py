"""New items (cold start): the protocol's dataset, frozen cold rows and where their base part comes from."""

import json

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed
from synthetic import ATTRIBUTES, tiny_config

from recbole_guided.atomic_files import AtomicFormat, read_atomic
from recbole_guided.base_stage import export_item_embeddings
from recbole_guided.compat import SafeTrainer
from recbole_guided.config import GuidedConfig, get_model
from recbole_guided.data_files import BaseEmbeddings, GuidedTable
from recbole_guided.errors import ConfigError
from recbole_guided.evaluation import RunRanks
from recbole_guided.new_items import kept_rows, make_new_item_dataset
from recbole_guided.refined_embedding import center_rows, normalize_columns, predict_base
from recbole_guided.training_split import warm_items

NAME = "tiny-new20"


@pytest.fixture(scope="module")
def new_root(tiny_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("new")
    make_new_item_dataset(tiny_root, "tiny", AtomicFormat(), "timestamp", share=0.2, seed=1, out_root=root)
    # As the base stage exports a trained table: old items only. (A text encoder's file has all.)
    full = BaseEmbeddings.read(tiny_root / "tiny" / "tiny-base.npz")
    new = set(manifest(root)["new_items"])
    old = [k for k, t in enumerate(full.tokens) if t not in new]
    BaseEmbeddings([full.tokens[k] for k in old], full.vectors[old]).write(root / NAME / f"{NAME}-base.npz")
    full.write(root / NAME / f"{NAME}-text.npz")
    return root


def new_config(root, model="GuidedSASRec", **overrides):
    settings = tiny_config(root, NAME, load_col={"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
                           **overrides)
    return GuidedConfig(model, NAME, None, settings)


def prepare_new(root, model="GuidedSASRec", **overrides):
    config = new_config(root, model, **overrides)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    splits = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    return config, dataset, splits, get_model(config["model"])(config, splits[0]._dataset)


def manifest(root):
    return json.loads((root / NAME / f"{NAME}.new_items.json").read_text())


def test_a_new_item_is_only_ever_a_users_last_interaction(tiny_root, new_root):
    source = read_atomic(tiny_root / "tiny" / "tiny.inter")
    table = read_atomic(new_root / NAME / f"{NAME}.inter")
    new = set(manifest(new_root)["new_items"])
    assert len(new) == 6  # 20% of 30 items
    last = {}
    for user, time in zip(table.columns["user_id"], table.columns["timestamp"]):
        last[user] = max(last.get(user, -1.0), float(time))
    new_rows = [(u, float(t)) for u, i, t in zip(*table.columns.values()) if i in new]
    assert new_rows and all(time == last[user] for user, time in new_rows)
    assert len(new_rows) == manifest(new_root)["users_with_new_target"]
    # every old-item interaction is kept; the other new-item ones are gone
    old = sum(1 for i in source.columns["item_id"] if i not in new)
    assert len(table) == old + len(new_rows)
    for suffix in ("item", "guided"):  # copied under the new name: every item stays rankable and rated
        assert (new_root / NAME / f"{NAME}.{suffix}").is_file()


def test_the_protocol_dataset_is_made_once_and_refuses_other_settings(tiny_root, new_root):
    inter = new_root / NAME / f"{NAME}.inter"
    stamp = inter.stat().st_mtime_ns
    make_new_item_dataset(tiny_root, "tiny", AtomicFormat(), "timestamp", share=0.2, seed=1, out_root=new_root)
    assert inter.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="move it aside"):
        make_new_item_dataset(tiny_root, "tiny", AtomicFormat(), "timestamp", share=0.2, seed=2, out_root=new_root)


def test_cold_items_are_the_new_ones_and_get_frozen_rows_predicted_from_their_attributes(new_root):
    config, dataset, (train, *_), model = prepare_new(new_root)
    table = model.item_embedding
    id2token = dataset.field2id_token[dataset.iid_field]
    warm = warm_items(train.dataset)
    cold_tokens = {id2token[i] for i in np.flatnonzero(~warm[1:]) + 1}
    assert cold_tokens == set(manifest(new_root)["new_items"])
    assert set(table.cold_items.tolist()) == set(np.flatnonzero(~warm[1:]) + 1)

    # The base part of a cold row is the ridge map of its attributes, fitted on warm rows.
    guided = GuidedTable.read(new_root / NAME / f"{NAME}.guided")
    row_of = {t: k for k, t in enumerate(guided.tokens)}
    raw = np.zeros((dataset.item_num, len(ATTRIBUTES)))
    raw[1:] = guided.values[[row_of[t] for t in id2token[1:]]]
    features = np.zeros_like(raw)
    features[1:] = normalize_columns(center_rows(raw[1:], "item"), "zscore")
    base = table.base.detach().double().numpy()[: dataset.item_num]
    expected = predict_base(features, base, warm, "attributes")
    cold = table.cold_items.numpy()
    np.testing.assert_allclose(base[cold], expected[cold], atol=1e-5)
    assert not np.allclose(base[cold], base[warm].mean(axis=0), atol=1e-3)  # not merely the mean

    # Training pushes no cold row anywhere: base, guided (if trainable) and score stay.
    before = table.weight.detach().clone()
    SafeTrainer(config, model, dataset)._train_epoch(train, 0)
    after = table.weight.detach()
    assert torch.equal(after[cold], before[cold])
    assert not torch.equal(after[warm], before[warm])


def test_on_eval_cold_rows_follow_the_warm_rows_training_moved(new_root):
    config, dataset, (train, *_), model = prepare_new(new_root)
    table = model.item_embedding
    cold = table.cold_items.numpy()
    built = table.base.detach().clone()
    SafeTrainer(config, model, dataset)._train_epoch(train, 0)
    assert torch.equal(table.base.detach()[cold], built[cold])  # no gradient reached them
    model.eval()  # about to score: re-placed from the warm rows as they are now
    base = table.base.detach().double().numpy()
    warm = warm_items(train.dataset)
    features = (table.guided / table.scale).detach().double().numpy()
    np.testing.assert_allclose(base[cold], predict_base(features, base, warm, "attributes")[cold], atol=1e-5)
    assert not torch.allclose(table.base.detach()[cold], built[cold])
    placed = table.base.detach().clone()
    model.train()
    model.eval()
    assert torch.equal(table.base.detach(), placed)  # placing again changes nothing


def test_ridge_map_recovers_a_linear_relation_and_mean_is_the_warm_mean():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4))
    truth = rng.normal(size=(4, 6))
    base = features @ truth + 0.5
    warm = np.arange(200) < 150
    predicted = predict_base(features, base, warm, "attributes")
    np.testing.assert_allclose(predicted[~warm], base[~warm], atol=0.05)
    cold = np.flatnonzero(~warm)
    np.testing.assert_allclose(predict_base(features, base, warm, "attributes", cold), predicted[cold])
    np.testing.assert_allclose(predict_base(features, base, warm, "mean"), np.tile(base[warm].mean(0), (200, 1)))
    no_features = predict_base(features[:, :0], base, warm, "attributes")
    np.testing.assert_allclose(no_features, np.tile(base[warm].mean(0), (200, 1)))


def test_cold_items_mean_and_train(new_root):
    _, dataset, (train, *_), model = prepare_new(new_root, cold_items="mean")
    table = model.item_embedding
    cold = table.cold_items.numpy()
    warm = warm_items(train.dataset)
    base = table.base.detach().double().numpy()
    np.testing.assert_allclose(base[cold], np.tile(base[warm].mean(axis=0), (len(cold), 1)), atol=1e-6)
    # train: RecBole's behaviour, no frozen row (the base file then must know every item)
    _, _, _, model = prepare_new(new_root, cold_items="train", missing_items="mean")
    assert len(model.item_embedding.cold_items) == 0


def test_the_pca_is_fitted_on_warm_items_and_a_file_row_of_a_cold_item_is_used(new_root, tmp_path):
    """A text encoder knows new items: their rows come from the file, through the warm items' PCA."""
    _, dataset, (train, *_), model = prepare_new(new_root, base_embedding_file=str(new_root / NAME / f"{NAME}-text.npz"))
    id2token = dataset.field2id_token[dataset.iid_field]
    warm = warm_items(train.dataset)
    base_file = BaseEmbeddings.read(new_root / NAME / f"{NAME}-text.npz")
    # the same file with cold rows replaced by huge values: warm rows must not change
    vectors = base_file.vectors.copy()
    cold_rows = [k for k, t in enumerate(base_file.tokens) if t in {id2token[i] for i in np.flatnonzero(~warm[1:]) + 1}]
    vectors[cold_rows] = 1e3
    other = tmp_path / "junk.npz"
    BaseEmbeddings(base_file.tokens, vectors).write(other)
    _, _, _, model2 = prepare_new(new_root, base_embedding_file=str(other))
    a = model.item_embedding.base.detach().numpy()[warm]
    b = model2.item_embedding.base.detach().numpy()[warm]
    np.testing.assert_allclose(a @ a.T, b @ b.T, atol=1e-4)
    cold = model2.item_embedding.cold_items.numpy()
    assert np.abs(model2.item_embedding.base.detach().numpy()[cold]).max() > 10  # projected from the file


def test_bert4rec_cold_output_bias_stays(new_root):
    config, dataset, (train, *_), model = prepare_new(new_root, "GuidedBERT4Rec")
    cold = model.item_embedding.cold_items
    bias0 = model.output_bias.detach().clone()
    SafeTrainer(config, model, dataset)._train_epoch(train, 0)
    assert torch.equal(model.output_bias.detach()[cold], bias0[cold])
    assert not torch.equal(model.output_bias.detach(), bias0)


def test_the_base_stage_exports_warm_items_only(new_root):
    _, dataset, (train, *_), model = prepare_new(new_root, "GuidedSASRec")
    path = new_root / "export.npz"
    export_item_embeddings(model, train.dataset, path)
    exported = BaseEmbeddings.read(path)
    id2token = train.dataset.field2id_token[train.dataset.iid_field]
    assert set(exported.tokens) == {id2token[i] for i in np.flatnonzero(warm_items(train.dataset))}


def test_a_run_on_the_protocol_reports_the_cold_group(new_root):
    from recbole_guided.quick_start import run_recbole_guided

    settings = tiny_config(new_root, NAME, load_col={"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]})
    settings.pop("base_embedding_file")  # the base stage trains SASRec and exports its old items
    result = run_recbole_guided("GuidedSASRec", NAME, None, settings)
    groups = result["groups"]["full"]
    assert groups["cold"]["users"] == manifest(new_root)["users_with_new_target"] > 0
    assert groups["cold"]["users"] + groups["warm"]["users"] == groups["all"]["users"]
    assert result["baseline"]["groups"]["full"]["cold"]["users"] == groups["cold"]["users"]

    # A new item is explained like any other: its score splits into base and attribute parts.
    from recbole_guided.explain import explain
    from recbole_guided.quick_start import load_guided_model

    ranks = RunRanks.read(result["ranks_file"])
    user, item = ranks.users[ranks.groups["cold"]][0], ranks.targets[ranks.groups["cold"]][0]
    assert item in manifest(new_root)["new_items"]
    _, model, dataset, _, _, test_data = load_guided_model(result["saved_model_file"])
    e = explain(model, dataset, test_data, str(user), 5, str(item))
    focus = e.focus
    assert focus.token == item and set(focus.contributions) == set(ATTRIBUTES)
    assert focus.total == pytest.approx(focus.base + sum(focus.contributions.values()), abs=1e-4)


def test_the_new_items_command_writes_the_protocol_dataset(tiny_root, new_root, tmp_path, monkeypatch, capsys):
    from recbole_guided.cli import main

    settings = tmp_path / "tiny.yaml"
    settings.write_text(f"data_path: {tiny_root}\nUSER_ID_FIELD: user_id\nITEM_ID_FIELD: item_id\nTIME_FIELD: timestamp\n"
                        "load_col: {inter: [user_id, item_id, timestamp]}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["new-items", "--dataset=tiny", f"--config_files={settings}", "--share=0.2", "--seed=1"]) == 0
    assert "6 new items" in capsys.readouterr().out
    made = json.loads((tmp_path / "dataset" / NAME / f"{NAME}.new_items.json").read_text())
    assert made["new_items"] == manifest(new_root)["new_items"]  # the seed fixes which items are new
    assert (tmp_path / "dataset" / NAME / f"{NAME}.inter").is_file()


def test_a_new_last_item_tied_with_another_as_recbole_reads_time_is_dropped():
    """RecBole keeps float fields in float32: 880859722 and 880859723 are the same time to its sort."""
    users, items = ["a", "a", "a", "b", "b"], ["1", "2", "3", "1", "3"]
    keep = kept_rows(users, items, np.array([880859693, 880859722, 880859723, 1, 2.0]), {"3"})
    assert keep.tolist() == [True, True, False, True, True]

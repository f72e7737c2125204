"""Checkpoints hold plain values only, reload exactly, refuse pickled code, and resume exactly."""

import os

import pytest
import torch
from conftest import prepare

from recbole_guided.compat import SafeTrainer, load_checkpoint, save_checkpoint
from recbole_guided.errors import CheckpointError
from recbole_guided.quick_start import load_guided_model, train_and_evaluate


@pytest.mark.parametrize("name", ["GuidedSASRec", "GuidedBERT4Rec", "GuidedGRU4Rec"])
def test_checkpoint_reloads_with_weights_only_and_scores_identically(tiny_root, name):
    config, *_ = prepare(name, tiny_root)
    result = train_and_evaluate(config)
    path = result["saved_model_file"]
    raw = torch.load(path, weights_only=True)  # plain tensors and values only
    assert raw["model"] == name and raw["dataset"] == "tiny"

    _, model, _, _, _, test_data = load_guided_model(path)
    trained = result["_trained_model"].eval()
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        torch.testing.assert_close(model.full_sort_predict(batch), trained.full_sort_predict(batch), rtol=0, atol=0)


def test_checkpoint_reloads_with_the_options_it_was_trained_with(tiny_root, tmp_path):
    import json

    config, *_ = prepare("GuidedSASRec", tiny_root, guided_center="none")
    path = train_and_evaluate(config)["saved_model_file"]
    checkpoint = load_checkpoint(path)
    # a default the run did not set explicitly, changed since: the stored value wins, not today's
    external = {k: v for k, v in json.loads(checkpoint["external_config"]).items() if k != "guided_center"}
    save_checkpoint(tmp_path / "a.pth", **{**checkpoint, "external_config": json.dumps(external)})
    loaded, *_ = load_guided_model(tmp_path / "a.pth")
    assert loaded["guided_center"] == "none"
    # written before an option existed: the value that reproduces the behaviour it was trained with
    stored = {k: v for k, v in json.loads(checkpoint["config"]).items() if k not in ("guided_center", "cold_items")}
    save_checkpoint(tmp_path / "b.pth", **{**checkpoint, "external_config": json.dumps(external),
                                           "config": json.dumps(stored)})
    loaded, *_ = load_guided_model(tmp_path / "b.pth")
    assert (loaded["guided_center"], loaded["cold_items"]) == ("none", "train")


class Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"format": "recbole-guided/1", "state_dict": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)


def test_recbole_style_checkpoint_with_pickled_config_is_refused(tiny_root, tmp_path):
    config, *_ = prepare("GuidedSASRec", tiny_root)
    path = tmp_path / "recbole.pth"
    torch.save({"config": config, "state_dict": {}}, path, pickle_protocol=4)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)


def test_plain_checkpoint_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a recbole-guided checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pth")


def test_checkpoint_for_another_model_is_refused(tiny_root, tmp_path):
    config, dataset, _, model = prepare("GuidedSASRec", tiny_root)
    trainer = SafeTrainer(config, model, dataset)
    path = tmp_path / "sasrec.pth"
    trainer.saved_model_file = str(path)
    trainer._save_checkpoint(0, verbose=False)
    config2, dataset2, _, model2 = prepare("GuidedGRU4Rec", tiny_root)
    with pytest.raises(CheckpointError, match="made for model GuidedSASRec"):
        SafeTrainer(config2, model2, dataset2).resume_checkpoint(path)


def test_save_checkpoint_refuses_to_write_objects(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(path, model="m", values=[1, 2.0, "x"])
    assert load_checkpoint(path)["values"] == [1, 2.0, "x"]
    with pytest.raises(TypeError, match=r"checkpoint\['thing'\] is a Payload"):
        save_checkpoint(tmp_path / "bad.pth", thing=Payload())
    assert not (tmp_path / "bad.pth").exists()


@pytest.mark.parametrize("name", ["GuidedSASRec", "GuidedBERT4Rec"])
def test_resumed_training_equals_uninterrupted_training(tiny_root, tmp_path, name):
    def fit(epochs, saved_file, resume_from=None):
        config, dataset, (train, valid, _), model = prepare(name, tiny_root, epochs=epochs)
        trainer = SafeTrainer(config, model, dataset)
        trainer.saved_model_file = str(saved_file)
        if resume_from:
            trainer.resume_checkpoint(resume_from)
            trainer.saved_model_file = str(saved_file)
        trainer.fit(train, valid, saved=True, show_progress=False)
        return model.state_dict()

    uninterrupted = fit(3, tmp_path / "full.pth")
    fit(1, tmp_path / "first.pth")  # "interrupted" after the first epoch
    resumed = fit(3, tmp_path / "resumed.pth", resume_from=tmp_path / "first.pth")
    for key, value in uninterrupted.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


def test_trainers_started_in_the_same_second_never_share_a_checkpoint(tiny_root):
    config, dataset, _, model = prepare("GuidedSASRec", tiny_root)
    names = {SafeTrainer(config, model, dataset).saved_model_file for _ in range(3)}
    assert len(names) == 3  # RecBole's <model>-<time>.pth would give one name (a sweep evaluated the wrong model)
    assert all(f"-{os.getpid()}" in n for n in names)

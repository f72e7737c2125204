"""LoRA fine-tuning of the rating LLM, on a tiny model and dataset the tests build."""

from __future__ import annotations

import pytest
import torch
import yaml
from synthetic import ATTRIBUTES, make_dataset, tiny_config
from tiny_llm import build_tiny_llm

from recbole_guided.data_files import GuidedTable
from recbole_guided.llm.backends import HFBackend
from recbole_guided.llm.finetune import ItemGuided, LoraOptions, train_lora, training_examples
from recbole_guided.llm.prompts import parse_json_answer, read_item_texts, user_messages
from recbole_guided.llm.schema import AttributeSchema
from recbole_guided.llm.users import split_targets, training_sequences

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Tiny dataset, its splits, a schema over its guided attributes, item texts and a tiny LLM."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_guided.config import GuidedConfig

    root = tmp_path_factory.mktemp("lora")
    make_dataset(root, "toy", n_users=12, n_items=20, per_user=8)
    schema_file = root / "toy.yaml"
    schema_file.write_text(yaml.safe_dump({
        "domain": "movies", "framing": "You are a clerk.", "user_framing": "Judge the customer.",
        "item_template": "{title}",
        "scale": {"min": 1, "max": 3},
        "attributes": [{"name": a, "description": a, "low": "no", "high": "yes"} for a in ATTRIBUTES[:2]]}))
    full = GuidedTable.read(root / "toy" / "toy.guided")  # two attributes: a short answer to learn
    GuidedTable("item_id", full.tokens, ATTRIBUTES[:2], full.values[:, :2]).write(root / "toy" / "toy.guided")
    schema = AttributeSchema.load(schema_file)
    config = GuidedConfig("SASRec", "toy", config_dict=tiny_config(root, "toy", MAX_ITEM_LIST_LENGTH=50))
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    return {"root": root, "schema": schema, "texts": read_item_texts(root / "toy" / "toy.item", schema),
            "histories": training_sequences(train.dataset), "valid": split_targets(valid),
            "test": split_targets(test), "items": ItemGuided(root / "toy" / "toy.guided", schema),
            "llm": build_tiny_llm(root / "llm")}


@pytest.fixture(scope="module")
def tuned(toy):
    """The tiny LLM before and after 60 LoRA steps on 3 users (all linear layers, high rate)."""
    backend = HFBackend(toy["llm"], device_map="cpu", max_new_tokens=80)
    before = {k: v.clone() for k, v in backend.model.state_dict().items()}
    options = LoraOptions(users=3, batch_size=3, history_length=1, negatives=50, epochs=60, lr=1e-2,
                          target_modules=ALL_LINEAR, format_weight=3.0)
    examples = training_examples(toy["histories"], options)
    log = train_lora(backend, toy["schema"], examples, toy["texts"], toy["items"], options, show_progress=False)
    return backend, before, examples, log


def test_training_prompts_hold_training_items_only(toy):
    examples = training_examples(toy["histories"], LoraOptions(users=100, history_length=50))
    assert len(examples) == 12
    for e in examples:
        held_out = {toy["valid"][e.user], toy["test"][e.user]}
        sequence = toy["histories"][e.user]
        assert e.history + [e.target] == sequence          # the training sequence, in time order
        assert not held_out & set(e.history + [e.target]) or held_out & set(sequence[:-2])  # repeats aside
        prompt = user_messages(toy["schema"], [toy["texts"][t] for t in e.history], "logprob")[1]["content"]
        listed = [line.split(". ", 1)[1] for line in prompt.splitlines() if line[:1].isdigit() and ". " in line]
        assert listed == [toy["texts"][t] for t in e.history]
        assert toy["texts"][e.target] not in listed or e.target in e.history


def test_losses_decrease_and_only_lora_parameters_change(tuned):
    backend, before, _, log = tuned
    first, last = log[0], log[-1]
    assert last["format_loss"] < 0.5 * first["format_loss"]
    assert last["recommendation_loss"] < first["recommendation_loss"]
    assert any("lora_B" in name and p.abs().sum() > 0 for name, p in backend.model.named_parameters())
    for name, p in backend.model.named_parameters():
        assert p.requires_grad == ("lora_" in name), name
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p.detach(), before[key]), name


def test_generate_mode_still_parses_after_tuning(toy, tuned, tmp_path):
    backend, _, examples, _ = tuned
    e = examples[0]
    [answer] = backend.generate([user_messages(toy["schema"], [toy["texts"][t] for t in e.history], "generate")])
    scores = parse_json_answer(answer, toy["schema"])
    assert list(scores) == ATTRIBUTES[:2]
    backend.model.save_pretrained(tmp_path / "adapter")
    reloaded = HFBackend(toy["llm"], device_map="cpu", adapter=tmp_path / "adapter")
    assert "+lora-" in reloaded.model_id
    messages = user_messages(toy["schema"], [toy["texts"][t] for t in e.history], "logprob")
    assert reloaded.expected_scores([messages], toy["schema"]) == backend.expected_scores([messages], toy["schema"])

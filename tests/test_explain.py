"""Explanations: the score decomposition adds up, user vectors come from training items only."""

import numpy as np
import pytest
import torch
from conftest import prepare

from recbole_guided.compat import SafeTrainer
from recbole_guided.errors import GuidedError
from recbole_guided.evaluation import decompose
from recbole_guided.explain import explain, to_markdown, to_png, to_table
from recbole_guided.user_guided import history_profiles

MODELS = ["GuidedSASRec", "GuidedBERT4Rec", "GuidedGRU4Rec"]


def trained(name, root, **overrides):
    config, dataset, (train, valid, test), model = prepare(name, root, **overrides)
    SafeTrainer(config, model, dataset).fit(train, valid, saved=False)  # one epoch: p_u and b_i move
    model.eval()
    return config, dataset, test, model


@pytest.mark.parametrize("name", MODELS)
def test_base_part_plus_attribute_contributions_equal_full_sort_predict(tiny_root, name):
    _, _, test, model = trained(name, tiny_root)
    assert not torch.equal(model.user_guided.weight, model.user_guided.initial)  # p_u was trained
    for batch in test:
        interaction = batch[0]
        with torch.no_grad():
            scores = model.full_sort_predict(interaction)
        base, contributions = decompose(model, interaction)
        assert contributions.shape == (*scores.shape, model.item_embedding.guided_dim)
        torch.testing.assert_close(base + contributions.sum(-1), scores, rtol=1e-5, atol=1e-5)
        assert contributions.abs().sum() > 0 and base.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_explanation_ranks_and_parts_are_consistent(tiny_root, tmp_path, name):
    _, dataset, test, model = trained(name, tiny_root)
    e = explain(model, dataset, test, "u003", k=5)
    assert [i.rank for i in e.top] == [1, 2, 3, 4, 5]
    assert all(a.total >= b.total for a, b in zip(e.top, e.top[1:]))
    for i in e.top + [e.focus]:
        assert i.total == pytest.approx(i.base + i.guided, abs=1e-5)
        assert list(i.contributions) == model.item_embedding.attributes
    seen = set(e.history)
    assert not seen & {i.title for i in e.top}       # already-seen items are not recommended again
    assert e.focus_is_test_item and e.focus.rank >= 1
    assert set(e.profile_learned) == set(model.item_embedding.attributes)
    text, md = to_table(e), to_markdown(e)
    assert "u003" in text and "| rank | item | total | base | guided |" in md
    to_png(e, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = explain(model, dataset, test, "u003", k=5, item_token=e.top[2].token)
    assert other.focus.rank == 3 and "ranks #3" in " ".join(to_markdown(other).splitlines()[-3:])
    # the item asked about is marked in the top list too, not only when it falls below it
    assert [line.split()[0] for line in to_table(other).splitlines() if line[:5].strip().endswith("*")] == ["3*"]
    first = explain(model, dataset, test, "u003", k=5, item_token=e.top[0].token)
    assert to_markdown(first).rstrip().endswith("is the first recommendation.")


def test_unknown_user_is_a_clear_error(tiny_root):
    _, dataset, test, model = trained("GuidedSASRec", tiny_root)
    with pytest.raises(GuidedError, match="user 'nobody' is not in dataset tiny"):
        explain(model, dataset, test, "nobody")


def test_user_vectors_start_from_training_items_only(tiny_root):
    """p_u at start = mean guided vector of the user's training items; validation and test items
    (the last two of each user, in time order) never enter it."""
    _, dataset, (train, _, _), model = prepare("GuidedSASRec", tiny_root)
    table = model.item_embedding
    guided = (table.guided * table.guided_mask).detach().double().numpy()
    lines = (tiny_root / "tiny" / "tiny.inter").read_text().splitlines()[1:]
    events = {}
    for line in lines:
        user, item, ts = line.split("\t")
        events.setdefault(user, []).append((float(ts), item))
    for user, seq in events.items():
        ordered = [dataset.token2id(dataset.iid_field, item) for _, item in sorted(seq)]
        u = dataset.token2id(dataset.uid_field, user)
        expected = guided[sorted(set(ordered[:-2]))].mean(axis=0)
        np.testing.assert_allclose(model.user_guided.initial[u].double().numpy(), expected, rtol=1e-5, atol=1e-6)
        with_held_out = guided[sorted(set(ordered))].mean(axis=0)
        assert not np.allclose(expected, with_held_out)   # the check would notice a leak
    assert history_profiles([set()], guided).tolist() == [[0.0] * guided.shape[1]]

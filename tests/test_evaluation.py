"""Per-user ranks are the ones behind RecBole's metrics; groups and paired tests do what they say."""

import numpy as np
import pytest
from conftest import prepare
from recbole.utils import init_seed

from recbole_guided.compat import SafeTrainer
from recbole_guided.evaluation import RunRanks, UserRanks, group_metrics, head_items, run_ranks, target_ranks, user_groups
from recbole_guided.paired_test import paired_change, paired_rank_change
from recbole_guided.pipeline import Prepared, sampled_test_data


@pytest.mark.parametrize("name", ["GuidedSASRec", "GuidedBERT4Rec", "SASRec"])
def test_ranks_reproduce_recboles_metrics_full_and_sampled(tiny_root, name):
    config, dataset, (train, valid, test), model = prepare(name, tiny_root, metrics=["Recall", "MRR", "NDCG", "Hit"],
                                                           topk=[3, 10])
    trainer = SafeTrainer(config, model, dataset)
    trainer._train_epoch(train, 0)
    data = Prepared(dataset, train, valid, test)
    for loader in (test, sampled_test_data(config, data, "uni10")):
        init_seed(1, True)  # the sampled loader draws its negatives as it is iterated
        expected = trainer.evaluate(loader, load_best_model=False)
        init_seed(1, True)
        ranks = target_ranks(trainer, loader)
        assert len(ranks.ranks) == 24 and ranks.ranks.min() >= 1
        ours = group_metrics(ranks, {"all": np.ones(len(ranks.ranks), bool)}, ("recall", "mrr", "ndcg", "hit"), (3, 10))
        for metric, value in expected.items():
            assert ours["all"][metric] == pytest.approx(value, abs=1e-4), metric
    assert ranks.ranks.max() <= 11  # sampled: the target among 10 negatives


def test_head_is_the_smallest_popular_set_taking_the_share():
    popularity = np.array([0, 50, 30, 10, 5, 5])  # id 0 = padding
    head = head_items(popularity, share=0.8)
    assert head.tolist() == [False, True, True, False, False, False]  # 80 of 100 interactions
    assert head_items(popularity, share=0.81).tolist() == [False, True, True, True, False, False]


def test_groups_split_by_target_popularity_and_history_length(tiny_root):
    _, dataset, (train, _, test), _ = prepare("GuidedSASRec", tiny_root)
    users = test.dataset.inter_feat[dataset.uid_field].numpy()
    targets = test.dataset.inter_feat[dataset.iid_field].numpy()
    groups = user_groups(UserRanks(users, targets, np.ones(len(users))), train.dataset)
    assert (groups["tail"] ^ groups["head"]).all() and (groups["short"] ^ groups["long"]).all()
    assert groups["all"].sum() == len(users) == 24


def test_training_histories_are_each_users_items_but_the_last_two(tiny_root):
    from recbole_guided.evaluation import training_counts
    from recbole_guided.training_split import training_histories

    _, dataset, (train, _, _), _ = prepare("GuidedSASRec", tiny_root)
    lines = [line.split("\t") for line in (tiny_root / "tiny" / "tiny.inter").read_text().splitlines()[1:]]
    expected = {}
    for user, item, _ in sorted(lines, key=lambda f: (f[0], float(f[2]))):
        expected.setdefault(user, []).append(item)
    users, items = dataset.field2id_token["user_id"], dataset.field2id_token["item_id"]
    histories = training_histories(train.dataset)
    assert histories[0] == set()  # padding user
    # leave-one-out: validation and test (the last two) are not training items
    assert {users[u]: {items[i] for i in h} for u, h in enumerate(histories) if u} == {
        user: set(seen[:-2]) for user, seen in expected.items()}
    popularity, length = training_counts(train.dataset)
    assert length.tolist() == [len(h) for h in histories] and popularity.sum() == length.sum()
    assert popularity.tolist() == [sum(i in h for h in histories) for i in range(len(items))]


def test_modes_are_aligned_by_user_and_round_trip(tmp_path, tiny_root):
    _, dataset, *_ = prepare("GuidedSASRec", tiny_root)
    full = UserRanks(np.array([3, 1, 2]), np.array([5, 6, 7]), np.array([1, 2, 3]))
    sampled = UserRanks(np.array([1, 2, 3]), np.array([6, 7, 5]), np.array([20, 30, 10]))
    groups = {"all": np.ones(3, bool), "tail": np.array([True, False, False])}
    run = run_ranks({"full": full, "uni100": sampled}, groups, dataset)
    assert run.ranks["full"].tolist() == [2, 3, 1] and run.ranks["uni100"].tolist() == [20, 30, 10]
    assert run.groups["tail"].tolist() == [False, False, True]  # user 3's group moved with user 3
    run.write(tmp_path / "r.npz")
    again = RunRanks.read(tmp_path / "r.npz")
    assert again.users.tolist() == run.users.tolist() and again.ranks["uni100"].tolist() == [20, 30, 10]


def test_paired_change_finds_a_real_difference_and_none_where_there_is_none():
    rng = np.random.default_rng(0)
    a = np.where(rng.random(900) < 0.2, rng.random(900), 0.0)
    better = a + np.where(rng.random(900) < 0.1, 0.3, 0.0)
    result = paired_change(a, better)
    assert result.p < 0.001 and 0 < result.ci_low < result.change < result.ci_high
    same = paired_change(a, a)
    assert same.change == 0 and same.p == 1.0
    noise = paired_change(a, rng.permutation(a))  # same values, unpaired order: no systematic change
    assert noise.ci_low < 0 < noise.ci_high
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_change(a, a[:10])
    # Pooled over seeds that disagree, the two-level interval is wider than the one over users.
    runs = np.repeat([0, 1, 2, 3], 225)
    shifted = a + np.where(runs % 2 == 0, 0.2, -0.1) * (rng.random(900) < 0.3)
    flat, nested = paired_change(a, shifted), paired_change(a, shifted, runs=runs)
    assert nested.change == flat.change and nested.p == flat.p
    assert nested.ci_high - nested.ci_low > 1.5 * (flat.ci_high - flat.ci_low)
    # An ID model scores nothing on new items: no ratio, the absolute difference instead.
    cold = paired_change(np.zeros(900), better)
    assert cold.change != cold.change and cold.difference == pytest.approx(better.mean())
    assert 0 < cold.diff_low < cold.difference < cold.diff_high and "absolute" in str(cold)


def test_paired_rank_change_sees_moves_outside_the_top_ten():
    rng = np.random.default_rng(0)
    a = rng.integers(50, 1500, size=600)                        # every target outside the top 10
    b = np.maximum(1, (a * np.exp(rng.normal(-0.2, 0.5, size=600))).round())  # ranks about 18% better
    assert paired_change(1 / np.log2(a + 1) * (a <= 10), 1 / np.log2(b + 1) * (b <= 10)).p == 1.0  # NDCG@10 sees nothing
    moved = paired_rank_change(a, b)
    assert moved.p < 0.001 and moved.ci_low < moved.ratio < moved.ci_high < 1
    assert moved.ratio == pytest.approx(np.exp(-0.2), abs=0.06) and moved.higher > 0.6
    same = paired_rank_change(a, a)
    assert same.ratio == 1 and same.p == 1.0 and same.higher == 0.5
    noise = paired_rank_change(a, rng.permutation(a))           # same ranks, unpaired order: no move
    assert noise.ci_low < 1 < noise.ci_high
    runs = np.repeat([0, 1, 2], 200)
    assert paired_rank_change(a, b, runs=runs).ratio == moved.ratio
    with pytest.raises(ValueError, match="start at 1"):
        paired_rank_change(a - 50, b)


def test_attributes_share_of_the_ranking_grows_with_the_guided_scale(tiny_root):
    from recbole_guided.evaluation import guided_share

    shares, scales = [], []
    for option in ("auto", "auto*4"):
        _, _, (_, _, test), model = prepare("GuidedSASRec", tiny_root, guided_scale=option, user_guided=False)
        shares.append(guided_share(model, test))
        scales.append(model.item_embedding.scale)
    assert scales[1] == pytest.approx(4 * scales[0])
    assert 0 < shares[0] < shares[1] <= 1.5


def test_paired_values_align_users_and_take_the_group_from_the_first_run():
    groups = {"all": np.ones(3, bool), "tail": np.array([True, False, True])}
    a = RunRanks(np.array(["u1", "u2", "u3"]), np.array(["i", "j", "k"]), {"full": np.array([1, 5, 20])}, groups)
    b = RunRanks(np.array(["u3", "u1", "u2"]), np.array(["k", "i", "j"]), {"full": np.array([2, 1, 30])},
                 {g: m[[2, 0, 1]] for g, m in groups.items()})
    va, vb = a.paired_values(b, "full", "tail", "mrr", 10)
    assert va.tolist() == [1.0, 0.0] and vb.tolist() == [1.0, 0.5]  # u1, u3

"""One config -> dataset -> split -> model -> trainer, the way RecBole's quick start builds them.

Every part of the plugin that needs data or a model (the run function, the base stage, the
checkpoint loader, user scoring, explanations, benchmarks) builds them here, so they all get
the same seeds, the same split and the same model for the same config.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from logging import getLogger
from pathlib import Path

from recbole.data import create_dataset, data_preparation
from recbole.data.utils import create_samplers, get_dataloader
from recbole.trainer import Trainer
from recbole.utils import get_trainer, init_seed

from recbole_guided.compat import SafeTrainer
from recbole_guided.config import get_model, is_guided, parent_model
from recbole_guided.distributed import gather, is_main
from recbole_guided.errors import ConfigError
from recbole_guided.evaluation import (RunRanks, UserRanks, group_metrics, guided_share, run_ranks, target_ranks,
                                       user_groups)

SAMPLED_MODE = "uni100"  # what LLM-ESR and LLMEmb report: the target against 100 random items


@dataclass
class Prepared:
    dataset: object
    train_data: object
    valid_data: object
    test_data: object


def prepare_data(config) -> Prepared:
    """The dataset and RecBole's split of it, seeded as ``run_recbole`` seeds them."""
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    getLogger().info(dataset)
    return Prepared(dataset, *data_preparation(config, dataset))


def build_model(config, data: Prepared):
    """A fresh model on ``config['device']``, seeded as ``run_recbole`` seeds it."""
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    return get_model(config["model"])(config, data.train_data._dataset).to(config["device"])


def check_trainer(config) -> None:
    """The plugin trains with RecBole's standard ``Trainer``; a model that needs its own is refused."""
    name = parent_model(config["model"]) if is_guided(config["model"]) else config["model"]
    trainer = get_trainer(config["MODEL_TYPE"], name)
    if trainer is not Trainer:
        raise ConfigError(f"{name} trains with RecBole's {trainer.__name__}, which this plugin does not run; "
                          f"use RecBole's own run_recbole for it")


def train_and_evaluate(config, saved: bool = True, resume_file=None) -> dict:
    """RecBole's standard pipeline for one model; returns ``run_recbole``'s dict plus timings.

    ``resume_file``: a checkpoint of this model and dataset to continue training from (a
    checkpoint made for another model or item vocabulary is refused before training starts).

    On several processes every rank trains and is evaluated on its share of the users, and the
    metrics are RecBole's all-reduced ones; rank 0 alone then ranks every test user (on one
    process, the whole test split) for the groups, the attributes' share and the ranks file.
    ``processes`` lists what each process did (``SafeTrainer.summary``)."""
    logger = getLogger()
    check_trainer(config)
    data = prepare_data(config)
    model = build_model(config, data)
    logger.info(model)
    trainer = SafeTrainer(config, model, data.dataset)
    if resume_file:
        trainer.resume_checkpoint(resume_file)
    best_valid_score, best_valid_result = trainer.fit(
        data.train_data, data.valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(data.test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info(f"best valid : {best_valid_result}")
    logger.info(f"test result: {test_result}")
    processes = gather(config, trainer.summary())
    if len(processes) > 1:
        logger.info("processes: " + "; ".join(f"rank {p['rank']} ({p['device']}): {p['rows_trained']} training rows "
                                              f"over all epochs, {p['rows_evaluated']} test rows, last loss "
                                              f"{p['last_train_loss']:.4f}" for p in processes))
    main = is_main(config)
    ranks = evaluate_by_user(config, trainer, data) if main else None
    share = None
    if main and is_guided(config["model"]) and ranking_mode(config) == "full":
        share = guided_share(model, test_data_on_one_process(config, data))
    ranks_file = Path(trainer.saved_model_file).with_suffix(".ranks.npz") if saved and main else None
    if ranks_file is not None:  # beside the checkpoint: what per-user paired tests read
        ranks.write(ranks_file)
    groups = {mode: group_metrics(UserRanks(ranks.users, ranks.targets, r), ranks.groups, _metric_names(config),
                                  config["topk"]) for mode, r in ranks.ranks.items()} if main else None
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "evaluation": describe_evaluation(config),
        "groups": groups,  # {mode: {group: {"users": n, metric: value}}}, see evaluation.py
        "guided_share": share,  # how much of the users' top-100 scores the attributes account for
        "seconds_per_epoch": statistics.mean(trainer.epoch_seconds) if trainer.epoch_seconds else None,
        "epochs_trained": len(trainer.epoch_seconds),
        "epochs": config["epochs"],  # the budget: the cap and the patience of early stopping
        "stopping_step": config["stopping_step"],
        "valid_scores": trainer.valid_scores,
        "saved_model_file": trainer.saved_model_file if saved and main else None,
        "ranks_file": str(ranks_file) if ranks_file else None,
        "processes": processes,
        "_trained_model": model,
        "_data": data,
        "_ranks": ranks,
    }


def evaluate_by_user(config, trainer, data) -> RunRanks:
    """Every test user's rank of their target under the run's own evaluation and, when that is
    full ranking, also sampled (``uni100``) on the same trained model, with the user groups."""
    mode = ranking_mode(config)
    by_mode = {mode: target_ranks(trainer, test_data_on_one_process(config, data))}
    if mode == "full":
        by_mode[SAMPLED_MODE] = target_ranks(trainer, sampled_test_data(config, data, SAMPLED_MODE))
    return run_ranks(by_mode, user_groups(by_mode[mode], data.train_data.dataset), data.dataset)


def test_data_on_one_process(config, data: Prepared):
    """The run's test loader with every test user: a rank's own loader holds its share only."""
    return data.test_data if config["single_spec"] else sampled_test_data(config, data, ranking_mode(config))


def sampled_test_data(config, data: Prepared, mode: str):
    """The same test split under another evaluation mode (same users and targets): RecBole's own
    sampler and loader for ``mode``, over the datasets this run already built, on one process
    (no ``DistributedSampler``: every test user)."""
    twin = copy.deepcopy(config)
    twin.final_config_dict["single_spec"] = True
    twin.final_config_dict["eval_args"] = {**config["eval_args"], "mode": {"valid": mode, "test": mode}}
    twin._set_eval_neg_sample_args("valid")
    twin._set_eval_neg_sample_args("test")
    built = [data.train_data._dataset, data.valid_data._dataset, data.test_data._dataset]
    _, _, sampler = create_samplers(twin, data.dataset, built)
    return get_dataloader(twin, "test")(twin, built[2], sampler, shuffle=False)


def ranking_mode(config) -> str:
    mode = (config["eval_args"] or {}).get("mode") or "full"
    return mode.get("test", "full") if isinstance(mode, dict) else mode


def _metric_names(config) -> tuple[str, ...]:
    """The run's ranking metrics that a single target per user defines from its rank alone."""
    names = [m.lower() for m in config["metrics"] if m.lower() in ("mrr", "ndcg", "recall", "hit")]
    return tuple(names) or ("mrr", "ndcg", "recall")


def describe_evaluation(config) -> str:
    """What a result is measured on, from the config: the split, its order and the ranking mode."""
    args = config["eval_args"] or {}
    split = args.get("split") or {}
    if "LS" in split:
        how = "leave-one-out (last interaction = test, second-to-last = validation)"
    elif "RS" in split:
        how = "random split " + "/".join(str(r) for r in split["RS"])
    else:
        how = f"split {split}"
    order = {"TO": "time order", "RO": "random order"}.get(args.get("order"), f"order {args.get('order')}")
    mode = ranking_mode(config)
    if mode == "full":
        ranking = "full ranking over all items"
    elif mode.startswith(("uni", "pop")):
        kind = "uniformly" if mode.startswith("uni") else "by popularity"
        ranking = f"sampled: the target against {mode[3:]} negatives drawn {kind}"
    else:
        ranking = f"mode {mode}"
    return f"{config['dataset']}, {how}, {order}, {ranking}"

"""Run functions mirroring RecBole's quick start (which is never imported: see compat.py)."""

from __future__ import annotations

import json
import statistics
from logging import getLogger

from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed

from recbole_guided.compat import SafeTrainer, check_checkpoint_matches, load_checkpoint
from recbole_guided.config import GuidedConfig, get_model, plugin_models


def train_and_evaluate(config, saved: bool = True, resume_file=None) -> dict:
    """RecBole's standard pipeline for one model; returns ``run_recbole``'s dict plus timings.

    ``resume_file``: a checkpoint of this model and dataset to continue training from (a
    checkpoint made for another model or item vocabulary is refused before training starts)."""
    logger = getLogger()
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    trainer = SafeTrainer(config, model, dataset)
    if resume_file:
        trainer.resume_checkpoint(resume_file)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info(f"best valid : {best_valid_result}")
    logger.info(f"test result: {test_result}")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "seconds_per_epoch": statistics.mean(trainer.epoch_seconds) if trainer.epoch_seconds else None,
        "epochs_trained": len(trainer.epoch_seconds),
        "epochs": config["epochs"],  # the budget: the cap and the patience of early stopping
        "stopping_step": config["stopping_step"],
        "valid_scores": trainer.valid_scores,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "_trained_model": model,
        "_dataset": dataset,
    }


def run_recbole_guided(model=None, dataset=None, config_file_list=None, config_dict=None,
                       saved: bool = True, cmd_args=(), resume_file=None) -> dict:
    """Like ``recbole.quick_start.run_recbole``, for plugin and RecBole models alike.

    For a Guided model the base stage runs first (or its saved result is reused): the parent model
    is trained on the same data, split and seed, its item embeddings are exported, and the Guided
    model is built from them. The returned dict is ``run_recbole``'s plus ``seconds_per_epoch``,
    ``saved_model_file`` and ``baseline`` (the parent's result, ``None`` for a RecBole model).
    ``resume_file`` continues the (Guided) model's training from one of its checkpoints.
    """
    from recbole_guided.base_stage import run_base_stage
    from recbole_guided.guided_sources import preflight

    config = GuidedConfig(model, dataset, config_file_list, config_dict, cmd_args)
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    baseline = None
    if config["model"] in plugin_models():
        preflight(config)
        baseline = run_base_stage(config, dataset, config_file_list, config_dict, cmd_args)
        if config["base_embedding_file"] is None:
            config_dict = {**(config_dict or {}), "base_embedding_file": baseline["embedding_file"]}
            config = GuidedConfig(model, dataset, config_file_list, config_dict, cmd_args)
    result = _public(train_and_evaluate(config, saved=saved, resume_file=resume_file))
    result["baseline"] = baseline
    if baseline is not None:
        logger.info("\n" + comparison_table(baseline, result))
    return result


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def comparison_table(baseline: dict, guided: dict, split: str = "test_result") -> str:
    """The baseline and the Guided model side by side, with the relative change."""
    rows = [f"{'metric':<12}{baseline['model']:>14}{guided['model']:>16}{'change':>10}"]
    for metric, base_value in baseline[split].items():
        value = guided[split][metric]
        change = f"{100 * (value - base_value) / base_value:+.1f}%" if base_value else "n/a"
        rows.append(f"{metric:<12}{base_value:>14.4f}{value:>16.4f}{change:>10}")
    speed = [baseline.get("seconds_per_epoch"), guided.get("seconds_per_epoch")]
    if all(speed):
        rows.append(f"{'s/epoch':<12}{speed[0]:>14.1f}{speed[1]:>16.1f}{speed[1] / speed[0]:>9.2f}x")
    return f"{split.replace('_result', '')} results (full ranking)\n" + "\n".join(rows)


def results_record(result: dict) -> dict:
    """The JSON written by ``--results_file``: both models' results and speeds."""
    def part(r):
        return {key: _plain(r[key]) for key in ("model", "best_valid_result", "test_result", "seconds_per_epoch")}

    return {
        "model": result["model"],
        "dataset": result["dataset"],
        "seed": result["seed"],
        "baseline": part(result["baseline"]) if result.get("baseline") else None,
        "guided": part(result),
    }


def _plain(value):
    return {k: float(v) for k, v in value.items()} if isinstance(value, dict) else value


def load_guided_model(model_file, map_location="cpu"):
    """Like RecBole's ``load_data_and_model``, for checkpoints written by this plugin.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)``. The checkpoint is read
    with ``weights_only=True``; it must match the model and the dataset's item ids.
    """
    checkpoint = load_checkpoint(model_file, map_location=map_location)
    external = json.loads(checkpoint["external_config"])
    config = GuidedConfig(checkpoint["model"], checkpoint["dataset"], config_dict=external)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    check_checkpoint_matches(checkpoint, model_file, checkpoint["model"], dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return config, model, dataset, train_data, valid_data, test_data

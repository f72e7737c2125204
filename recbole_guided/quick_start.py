"""Run functions mirroring RecBole's quick start (which is never imported: see compat.py)."""

from __future__ import annotations

from logging import getLogger
from pathlib import Path

from recbole.data import create_dataset
from recbole.utils import init_logger

from recbole_guided.base_stage import run_base_stage
from recbole_guided.compat import check_checkpoint_matches, load_checkpoint
from recbole_guided.config import GuidedConfig, checkpoint_config, is_guided
from recbole_guided.distributed import is_main, make_folders, spawn
from recbole_guided.evaluation import RunRanks
from recbole_guided.guided_sources import preflight
from recbole_guided.options import GuidedOptions
from recbole_guided.paired_test import paired_change
from recbole_guided.pipeline import build_model, check_trainer, prepare_data, train_and_evaluate


def run_recbole_guided(model=None, dataset=None, config_file_list=None, config_dict=None,
                       saved: bool = True, cmd_args=(), resume_file=None, nproc: int = 1, world_size: int = -1,
                       ip: str = "localhost", port="5678", group_offset: int = 0) -> dict | None:
    """Like ``recbole.quick_start.run_recbole``, for plugin and RecBole models alike.

    For a Guided model the base stage runs first (or its saved result is reused): the parent model
    is trained on the same data, split and seed, its item embeddings are exported, and the Guided
    model is built from them. With ``base_embedding_file`` set, no parent is trained for the table
    (``compare_with_parent: True`` still trains it for the comparison). The returned dict is
    ``run_recbole``'s plus ``evaluation`` (what the metrics are measured on), ``groups`` (metrics
    per user group and ranking mode), ``guided_share`` (the attributes' share of the ranking),
    ``ranks_file`` (every test user's rank), ``seconds_per_epoch``, ``saved_model_file`` and
    ``baseline`` (the parent's result, ``None`` without one).
    ``resume_file`` continues the model's training from one of its checkpoints.

    ``nproc``, ``world_size``, ``ip``, ``port`` and ``group_offset`` are RecBole's ``run`` arguments:
    ``nproc`` processes on this node (one GPU each, or CPU with ``gloo``), ``world_size`` processes
    in all, this node's first global rank ``group_offset``, and rank 0's node at ``ip:port``. The
    base stage and the Guided model then train on all of them; global rank 0 writes every file and
    its result is returned (``None`` on the other nodes). See ``docs/scale.md``.
    """
    kwargs = dict(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict,
                  saved=saved, cmd_args=cmd_args, resume_file=resume_file)
    if nproc == 1 and world_size <= 0:
        return _run(**kwargs)
    make_folders(GuidedConfig(model, dataset, config_file_list, config_dict, cmd_args))  # a bad config fails here, once
    return spawn(_run, kwargs, nproc, world_size, ip, port, group_offset)


def _run(model, dataset, config_file_list, config_dict, saved, cmd_args, resume_file) -> dict:
    """One process's run: the whole run, or one rank of a distributed one."""
    config = GuidedConfig(model, dataset, config_file_list, config_dict, cmd_args)
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    check_trainer(config)
    if resume_file:  # refused now, not after the base stage has trained
        check_checkpoint_matches(load_checkpoint(resume_file), resume_file, config["model"], create_dataset(config))
    baseline = None
    if is_guided(config["model"]):
        options = GuidedOptions.from_config(config)
        preflight(options, config)
        baseline = run_base_stage(config, options, dataset, config_file_list, config_dict, cmd_args)
        if options.base_embedding_file is None:
            config_dict = {**(config_dict or {}), "base_embedding_file": baseline["embedding_file"]}
            config = GuidedConfig(model, dataset, config_file_list, config_dict, cmd_args)
    result = _public(train_and_evaluate(config, saved=saved, resume_file=resume_file))
    result["baseline"] = baseline
    if baseline is not None and is_main(config):
        logger.info("\n" + comparison_table(baseline, result))
    return result


def parent_result(model, dataset, config_file_list=None, config_dict=None, cmd_args=()) -> dict | None:
    """The base stage's result for a Guided model's run, without the Guided model: the parent as
    RecBole ships it, reused from ``saved/base/`` when a run with these settings trained it
    (``None`` when the run's base part comes from a file and no parent is trained)."""
    config = GuidedConfig(model, dataset, config_file_list, config_dict, cmd_args)
    init_logger(config)
    return run_base_stage(config, GuidedOptions.from_config(config), dataset, config_file_list, config_dict,
                          cmd_args)


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def comparison_table(baseline: dict, guided: dict, split: str = "test_result") -> str:
    """The baseline and the Guided model side by side, with the relative change, then one metric
    by user group and ranking mode (``evaluation.py`` defines the groups).

    Training speed is left out on purpose: the two models trained at different moments of the run,
    and a number that depends on what else shared the CPU is no comparison (benchmarks/speed.py
    measures it side by side)."""
    rows = [f"{'metric':<12}{baseline['model']:>14}{guided['model']:>16}{'change':>10}"]
    for metric, base_value in baseline[split].items():
        value = guided[split][metric]
        rows.append(f"{metric:<12}{base_value:>14.4f}{value:>16.4f}{_change(base_value, value):>10}")
    table = f"{split.replace('_result', '')} results ({guided['evaluation']})\n" + "\n".join(rows)
    if split == "test_result" and baseline.get("groups") and guided.get("groups"):
        table += "\n" + group_table(baseline, guided)
    if split == "test_result" and guided.get("guided_share") is not None:
        table += (f"\nattributes' share of the ranking: {guided['guided_share']:.3f} (variance of the guided part "
                  f"of each test user's top-100 scores over the variance of the scores, averaged)")
    return table


def group_table(baseline: dict, guided: dict) -> str:
    modes = [m for m in guided["groups"] if m in baseline["groups"]]
    names = [k for k in guided["groups"][modes[0]]["all"] if k != "users"]
    metric = next((k for k in names if k.startswith("ndcg")), names[0])
    rows = [f"{metric} by group (tail/head: the target outside/inside the items that take 80% of the training "
            f"interactions; short/long: training history up to / over the median; cold/warm: the target is "
            f"absent from / present in the training split)",
            f"{'ranking':<9}{'group':<7}{'users':>6}{baseline['model']:>13}{guided['model']:>16}{'change':>10}"
            f"   paired over users: change [95% CI] (Wilcoxon p)"]
    paired = _both_ranks(baseline, guided)
    name, k = metric.split("@")
    for mode in modes:
        for group, base in baseline["groups"][mode].items():
            value = guided["groups"][mode][group][metric]
            test = ""
            if paired and base["users"]:
                test = str(paired_change(*paired[0].paired_values(paired[1], mode, group, name, int(k))))
            rows.append(f"{mode:<9}{group:<7}{base['users']:>6}{base[metric]:>13.4f}{value:>16.4f}"
                        f"{_change(base[metric], value):>10}   {test}")
    return "\n".join(rows)


def _both_ranks(baseline: dict, guided: dict) -> tuple[RunRanks, RunRanks] | None:
    files = [baseline.get("ranks_file"), guided.get("ranks_file")]
    if not all(files) or not all(Path(f).is_file() for f in files):  # records from before ranks were kept
        return None
    return RunRanks.read(files[0]), RunRanks.read(files[1])


def _change(base: float, value: float) -> str:
    return f"{100 * (value - base) / base:+.1f}%" if base and base == base else "n/a"  # n/a: zero or NaN


def results_record(result: dict) -> dict:
    """The JSON written by ``--results_file``: both models' results and speeds."""
    def part(r):
        return {key: _plain(r.get(key)) for key in ("model", "best_valid_result", "test_result", "groups",
                                                     "guided_share", "seconds_per_epoch")}

    return {
        "model": result["model"],
        "dataset": result["dataset"],
        "seed": result["seed"],
        "evaluation": result["evaluation"],
        "baseline": part(result["baseline"]) if result.get("baseline") else None,
        "guided": part(result),
    }


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return float(value) if hasattr(value, "item") else value


def load_guided_model(model_file, map_location="cpu"):
    """Like RecBole's ``load_data_and_model``, for checkpoints written by this plugin.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)``. The checkpoint is read
    with ``weights_only=True``; it must match the model and the dataset's item ids.
    """
    checkpoint = load_checkpoint(model_file, map_location=map_location)
    config = GuidedConfig(checkpoint["model"], checkpoint["dataset"], config_dict=checkpoint_config(checkpoint))
    data = prepare_data(config)
    check_checkpoint_matches(checkpoint, model_file, checkpoint["model"], data.dataset)
    model = build_model(config, data)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return config, model, data.dataset, data.train_data, data.valid_data, data.test_data

"""The base stage: train the parent model, export its item embeddings, remember its result.

The Guided model's base part is the PCA of these embeddings (unless ``base_embedding_file`` gives
one), and the parent's result is the baseline it is compared with. Both come from the same data, split and seed as the Guided run,
and the embeddings are learned on the training split only (RecBole trains on it; validation
only picks the best epoch). A finished base stage is reused when the same config comes again.
"""

from __future__ import annotations

import hashlib
import json
from logging import getLogger
from pathlib import Path

import numpy as np

from recbole_guided.atomic_files import atomic_path
from recbole_guided.compat import plain_config
from recbole_guided.config import GuidedConfig, parent_model
from recbole_guided.data_files import BaseEmbeddings
from recbole_guided.distributed import is_main, main_value
from recbole_guided.errors import ConfigError
from recbole_guided.options import PLUGIN_KEYS, GuidedOptions
from recbole_guided.pipeline import train_and_evaluate
from recbole_guided.training_split import warm_items

# Settings that do not change what the base model learns.
_IRRELEVANT = set(PLUGIN_KEYS) | {
    "model", "device", "gpu_id", "use_gpu", "show_progress", "checkpoint_dir", "state", "log_wandb",
    "wandb_project", "local_rank", "world_size", "nproc", "ip", "port", "offset", "single_spec", "verbose",
    "worker", "shuffle", "save_dataset", "save_dataloaders", "dataset_save_path", "dataloaders_save_path",
}


def run_base_stage(guided_config, options: GuidedOptions, dataset, config_file_list, config_dict,
                   cmd_args) -> dict | None:
    """Train (or reuse) the base model for this run; return its result and its embedding file.

    With ``base_embedding_file`` given, the table needs no base model: the parent is trained only
    for the comparison, when ``compare_with_parent`` asks for it (``None`` is returned otherwise).
    """
    if options.base_embedding_file:
        if not options.compare_with_parent:
            getLogger().info(f"base stage: skipped (base_embedding_file {options.base_embedding_file})")
            return None
        base_name = parent_model(guided_config["model"])
    else:
        base_name = options.base_model or parent_model(guided_config["model"])
    return train_base_model(guided_config, base_name, dataset, config_file_list, config_dict, cmd_args)


def train_base_model(guided_config, base_name, dataset, config_file_list, config_dict, cmd_args) -> dict:
    logger = getLogger()
    config = GuidedConfig(base_name, dataset, config_file_list, config_dict, cmd_args)
    stem = Path(guided_config["checkpoint_dir"]) / "base" / f"{base_name}-{config['dataset']}-seed{config['seed']}-{config_key(config)}"
    record_file, embedding_file = stem.with_suffix(".json"), stem.with_suffix(".npz")
    # Part of config_key, so a reused record had the same budget (records written before it was kept lack it).
    budget = {"epochs": config["epochs"], "stopping_step": config["stopping_step"]}
    # Rank 0 decides for every rank of a distributed run: the files may appear while another looks.
    if main_value(config, record_file.is_file() and embedding_file.is_file()):
        logger.info(f"base stage: reusing {base_name} from {record_file}")
        return {**json.loads(record_file.read_text()), **budget}
    logger.info(f"base stage: training {base_name} on {config['dataset']} (seed {config['seed']})")
    result = train_and_evaluate(config)  # on a distributed run, by all ranks together
    if not is_main(config):
        return main_value(config, None)  # rank 0 writes the files below, then sends its record
    export_item_embeddings(result["_trained_model"], result["_data"].train_data.dataset, embedding_file)
    record = {
        "model": base_name,
        "evaluation": result["evaluation"],
        "best_valid_score": float(result["best_valid_score"]),
        "best_valid_result": {k: float(v) for k, v in result["best_valid_result"].items()},
        "test_result": {k: float(v) for k, v in result["test_result"].items()},
        "seconds_per_epoch": result["seconds_per_epoch"],
        "epochs_trained": result["epochs_trained"],
        **budget,
        "groups": result["groups"],
        "saved_model_file": result["saved_model_file"],
        "ranks_file": result["ranks_file"],
        "embedding_file": str(embedding_file),
    }
    with atomic_path(record_file) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return main_value(config, record)


# Bumped when what the base stage exports changes, so that an older record is not reused.
EXPORT_VERSION = 2  # 2: items without training interactions are left out (their rows never learned)


def config_key(config) -> str:
    """Short hash of every setting that changes what the base model learns (and of the export)."""
    relevant = {k: v for k, v in plain_config(config).items() if k not in _IRRELEVANT}
    relevant["_export_version"] = EXPORT_VERSION
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:10]


def export_item_embeddings(model, train_dataset, path) -> None:
    """Write the trained item table as a base embedding file, keyed by token: the items the
    training split contains only. A cold item's row was only ever pushed down as a negative; the
    Guided model gives it a base part of its own (``cold_items``)."""
    table = getattr(model, "item_embedding", None)
    if table is None:
        raise ConfigError(f"base model {type(model).__name__} has no item_embedding table to export")
    warm = np.flatnonzero(warm_items(train_dataset))
    id2token = train_dataset.field2id_token[train_dataset.iid_field]
    tokens = [str(id2token[i]) for i in warm]
    vectors = table.weight.detach().cpu().double().numpy()[warm]
    BaseEmbeddings(tokens, vectors).write(path)

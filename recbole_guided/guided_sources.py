"""Where the guided and base parts come from, aligned to RecBole's item ids.

``guided_source``: ``file`` (LLM-rated ``<dataset>.guided``, the method), ``random`` (same shape,
random values: does the LLM's content matter?) or ``metadata`` (multi-hot of a categorical
``.item`` field such as ml-100k's genres: attributes without an LLM).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recbole_guided.data_files import BaseEmbeddings, GuidedTable, align_rows
from recbole_guided.errors import ConfigError, GuidedFileError

GUIDED_SOURCES = ("file", "random", "metadata")


def dataset_file(config, suffix: str) -> Path:
    return Path(config["data_path"]) / f"{config['dataset']}.{suffix}"


def guided_file(config) -> Path:
    return Path(config["guided_file"]) if config["guided_file"] else dataset_file(config, "guided")


def read_item_guided(config, key_field: str = "item_id") -> GuidedTable:
    """The guided file, checked against the ``guided_attributes`` schema when one is named."""
    path = guided_file(config)
    table = GuidedTable.read(path, key_field=key_field)
    if config["guided_attributes"]:
        from recbole_guided.llm.schema import AttributeSchema

        schema = AttributeSchema.load(config["guided_attributes"])
        table.check_attributes(schema.names, f"the schema {schema.source}", path)
    return table


def preflight(config) -> None:
    """Check the files and options a Guided run needs before anything trains, so a bad file is
    reported in seconds rather than after the base stage."""
    if not config["use_base"] and not config["use_guided"]:
        raise ConfigError("use_base and use_guided are both False: the refined embedding would be empty")
    if config["use_guided"] and (config["guided_source"] or "file") in ("file", "random"):
        read_item_guided(config, config["ITEM_ID_FIELD"])
    if config["base_embedding_file"]:
        BaseEmbeddings.read(os.fspath(config["base_embedding_file"]))
    if config["user_guided"] and config["user_guided_init"] == "file":
        GuidedTable.read(config["user_guided_file"] or dataset_file(config, "uguided"), key_field=config["USER_ID_FIELD"])


def item_guided(config, dataset) -> tuple[list[str], np.ndarray]:
    """Attribute names and the raw (unnormalized) guided matrix, row i = item id i, row 0 = pad."""
    id2token = dataset.field2id_token[dataset.iid_field]
    source = config["guided_source"] or "file"
    if source == "metadata":
        return metadata_guided(config, id2token)
    path = guided_file(config)
    table = read_item_guided(config, dataset.iid_field)
    if source == "file":
        return table.attributes, align_rows(table.tokens, table.values, id2token, str(path),
                                           missing=config["missing_items"])
    if source == "random":
        rng = np.random.default_rng(config["seed"])  # own generator: the global RNG stays as the base run's
        values = rng.standard_normal((len(id2token), len(table.attributes)))
        values[0] = 0.0
        return [f"random_{k}" for k in range(len(table.attributes))], values
    raise ConfigError(f"guided_source '{source}' unknown; expected one of {GUIDED_SOURCES}")


def metadata_guided(config, id2token) -> tuple[list[str], np.ndarray]:
    """Multi-hot of the ``.item`` field ``metadata_field`` (a token_seq), one attribute per value."""
    field = config["metadata_field"]
    path = dataset_file(config, "item")
    if not field:
        raise ConfigError("guided_source 'metadata' needs metadata_field (e.g. 'class' for ml-100k genres)")
    if not path.is_file():
        raise GuidedFileError(f"{path}: item file not found (needed for guided_source 'metadata')")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [cell.split(":")[0] for cell in header]
        if field not in names:
            raise GuidedFileError(f"{path}, line 1: no field '{field}'; fields are {names}")
        key, col = names[0], names.index(field)
        labels = {}
        for line in f:
            cells = line.rstrip("\n").split("\t")
            if len(cells) > col:
                labels[cells[0]] = cells[col].split()
    values_sorted = sorted({v for vs in labels.values() for v in vs})
    column = {v: k for k, v in enumerate(values_sorted)}
    tokens = list(labels)
    values = np.zeros((len(tokens), len(values_sorted)))
    for row, token in enumerate(tokens):
        for v in labels[token]:
            values[row, column[v]] = 1.0
    return values_sorted, align_rows(tokens, values, id2token, f"{path} ({key})", missing=config["missing_items"])


def item_base(config, dataset) -> np.ndarray:
    """Base embedding matrix, row i = item id i, from ``base_embedding_file``."""
    path = config["base_embedding_file"]
    if not path:
        raise ConfigError(
            "base_embedding_file is not set: run through run_recbole_guided (it trains and exports the "
            "base model first) or point base_embedding_file at a .npz of item tokens and vectors"
        )
    base = BaseEmbeddings.read(os.fspath(path))
    id2token = dataset.field2id_token[dataset.iid_field]
    return align_rows(base.tokens, base.vectors, id2token, str(path), missing=config["missing_items"])

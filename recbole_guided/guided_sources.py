"""Where the guided and base parts come from, aligned to RecBole's item ids.

``guided_source``: ``file`` (LLM-rated ``<dataset>.guided``, the method), ``random`` (same shape,
random values: does the LLM's content matter?) or ``metadata`` (multi-hot of a categorical
``.item`` field such as ml-100k's genres: attributes without an LLM).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recbole_guided.atomic_files import AtomicFormat, read_atomic, read_header
from recbole_guided.data_files import BaseEmbeddings, GuidedTable, align_rows
from recbole_guided.errors import ConfigError, GuidedFileError
from recbole_guided.options import GuidedOptions


def dataset_file(config, suffix: str) -> Path:
    return Path(config["data_path"]) / f"{config['dataset']}.{suffix}"


def guided_file(options: GuidedOptions, config) -> Path:
    return Path(options.guided_file) if options.guided_file else dataset_file(config, "guided")


def user_guided_file(options: GuidedOptions, config) -> Path:
    return Path(options.user_guided_file) if options.user_guided_file else dataset_file(config, "uguided")


def read_item_guided(options: GuidedOptions, config) -> GuidedTable:
    """The guided file, keyed by the dataset's item field, checked against the schema when one is named."""
    fmt = AtomicFormat.from_config(config)
    path = guided_file(options, config)
    table = GuidedTable.read(path, key_field=fmt.item_field, fmt=fmt)
    if options.guided_attributes:
        from recbole_guided.llm.schema import AttributeSchema

        schema = AttributeSchema.load(options.guided_attributes)
        table.check_attributes(schema.names, f"the schema {schema.source}", path)
    return table


def read_user_guided(options: GuidedOptions, config) -> tuple[Path, GuidedTable]:
    fmt = AtomicFormat.from_config(config)
    path = user_guided_file(options, config)
    return path, GuidedTable.read(path, key_field=fmt.user_field, fmt=fmt)


def preflight(options: GuidedOptions, config) -> None:
    """Read every file a Guided run needs before anything trains, so a bad file is reported in
    seconds rather than after the base stage."""
    if options.needs_guided_file:
        read_item_guided(options, config)
    if options.use_guided and options.guided_source == "metadata":
        read_metadata(options, config)
    if options.base_embedding_file:
        BaseEmbeddings.read(os.fspath(options.base_embedding_file))
    if options.user_guided and options.user_guided_init == "file":
        read_user_guided(options, config)


def item_guided(options: GuidedOptions, config, dataset) -> tuple[list[str], np.ndarray]:
    """Attribute names and the raw (unnormalized) guided matrix, row i = item id i, row 0 = pad."""
    id2token = dataset.field2id_token[dataset.iid_field]
    if options.guided_source == "metadata":
        path, names, tokens, values = read_metadata(options, config)
        return names, align_rows(tokens, values, id2token, str(path), missing=options.missing_items)
    table = read_item_guided(options, config)
    if options.guided_source == "file":
        return table.attributes, align_rows(table.tokens, table.values, id2token,
                                            str(guided_file(options, config)), missing=options.missing_items)
    rng = np.random.default_rng(config["seed"])  # own generator: the global RNG stays as the base run's
    values = rng.standard_normal((len(id2token), len(table.attributes)))
    values[0] = 0.0
    return [f"random_{k}" for k in range(len(table.attributes))], values


def read_metadata(options: GuidedOptions, config) -> tuple[Path, list[str], list[str], np.ndarray]:
    """``(path, value names, item tokens, multi-hot)`` of the ``.item`` field ``metadata_field``."""
    fmt = AtomicFormat.from_config(config)
    path = dataset_file(config, "item")
    if not path.is_file():
        raise GuidedFileError(f"{path}: item file not found (needed for guided_source 'metadata')")
    if not options.metadata_field:
        categorical = [f for f, kind in read_header(path, fmt).items() if kind in ("token", "token_seq")
                       and f != fmt.item_field]
        raise ConfigError(f"guided_source 'metadata' needs metadata_field: which field of {path} holds "
                          f"the categories? Its token fields are {categorical}")
    table = read_atomic(path, fmt, what="item file", fields=[fmt.item_field, options.metadata_field])
    labels = table.sequences(options.metadata_field, fmt)
    names = sorted({v for vs in labels for v in vs})
    column = {v: k for k, v in enumerate(names)}
    values = np.zeros((len(table), len(names)))
    for row, item_labels in enumerate(labels):
        values[row, [column[v] for v in item_labels]] = 1.0
    return path, names, table.columns[fmt.item_field], values


def item_base(options: GuidedOptions, config, dataset, optional: np.ndarray | None = None) -> np.ndarray:
    """Base embedding matrix, row i = item id i, from ``base_embedding_file``; rows of ``optional``
    items (cold ones) that the file lacks are NaN."""
    path = options.base_embedding_file
    if not path:
        raise ConfigError(
            "base_embedding_file is not set: run through run_recbole_guided (it trains and exports the "
            "base model first) or point base_embedding_file at a .npz of item tokens and vectors"
        )
    base = BaseEmbeddings.read(os.fspath(path))
    id2token = dataset.field2id_token[dataset.iid_field]
    return align_rows(base.tokens, base.vectors, id2token, str(path), missing=options.missing_items,
                      optional=optional)

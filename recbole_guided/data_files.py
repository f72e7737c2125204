"""The plugin's own files, validated, and their alignment to RecBole's internal ids.

* ``<dataset>.guided`` / ``<dataset>.uguided``: an atomic file keyed by the dataset's own item
  (or user) field, ``<ITEM_ID_FIELD>:token`` then one ``<attribute>:float`` column per attribute.
  Human readable on purpose. Read and written through ``atomic_files`` (separators from the config).
* base embeddings: ``.npz`` with ``tokens`` (strings) and ``vectors`` (float matrix).

Rows are always matched by token through RecBole's ``field2id_token``, never by row order.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Sequence

import numpy as np

from recbole_guided.atomic_files import AtomicFormat, atomic_path, read_atomic, write_atomic
from recbole_guided.errors import GuidedFileError
from recbole_guided.options import MISSING_POLICIES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuidedTable:
    """Attribute scores keyed by token: one row per item (or user), one column per attribute."""

    key_field: str
    tokens: list[str]
    attributes: list[str]
    values: np.ndarray  # (len(tokens), len(attributes)), float64, all finite

    def __post_init__(self):
        if self.values.shape != (len(self.tokens), len(self.attributes)):
            raise ValueError(
                f"values has shape {self.values.shape}, expected "
                f"({len(self.tokens)}, {len(self.attributes)})"
            )

    @classmethod
    def read(cls, path: str | os.PathLike, key_field: str | None = None,
             fmt: AtomicFormat = AtomicFormat()) -> "GuidedTable":
        """``key_field``: the field the first column must be (the dataset's item or user field)."""
        table = read_atomic(path, fmt, what="guided file")
        path = table.path
        key, attributes = _check_header(path, table.fields, table.types, key_field)
        tokens, seen = table.columns[key], {}
        for token, lineno in zip(tokens, table.lines):
            if not token:
                raise GuidedFileError(f"{path}, line {lineno}: empty {key} token")
            if token in seen:
                raise GuidedFileError(f"{path}, line {lineno}: duplicate {key} '{token}' (first on line {seen[token]})")
            seen[token] = lineno
        values = np.empty((len(tokens), len(attributes)), dtype=np.float64)
        for k, name in enumerate(attributes):
            values[:, k] = _parse_column(path, table, tokens, name)
        return cls(key, list(tokens), attributes, values)

    def write(self, path: str | os.PathLike, fmt: AtomicFormat = AtomicFormat()) -> None:
        """Write atomically, in the format that ``read`` accepts."""
        header = [(self.key_field, "token")] + [(a, "float") for a in self.attributes]
        rows = ([token] + [f"{v:.6g}" for v in row] for token, row in zip(self.tokens, self.values))
        write_atomic(path, header, rows, fmt)

    def check_attributes(self, expected: Sequence[str], source: str, path=None) -> None:
        if list(expected) != list(self.attributes):
            where = f"{path}, line 1: " if path else ""
            raise GuidedFileError(
                f"{where}guided attributes {self.attributes} do not match {source}, "
                f"which expects {list(expected)} (same names, same order)"
            )


def _check_header(path: Path, fields: list[str], types: dict[str, str],
                  key_field: str | None) -> tuple[str, list[str]]:
    first = fields[0]
    if types[first] != "token" or (key_field and first != key_field):
        want = f"{key_field}:token" if key_field else "<field>:token"
        raise GuidedFileError(f"{path}, line 1: first header cell is '{first}:{types[first]}', expected '{want}'"
                              + (" (the dataset's own id field: rename the header cell)" if key_field else ""))
    attributes = fields[1:]
    wrong = [f"{a}:{types[a]}" for a in attributes if types[a] != "float"]
    if wrong:
        raise GuidedFileError(f"{path}, line 1: header cell '{wrong[0]}' should be '<attribute>:float'")
    if not attributes:
        raise GuidedFileError(f"{path}, line 1: no '<attribute>:float' columns after the token")
    return first, attributes


def _parse_column(path: Path, table, tokens: list[str], name: str) -> np.ndarray:
    """One attribute's scores; vectorized, and cell by cell only to name the first bad one."""
    cells = table.columns[name]
    try:
        column = np.array(cells, dtype=np.float64)
        if np.isfinite(column).all():
            return column
    except ValueError:
        pass
    for token, lineno, cell in zip(tokens, table.lines, cells):
        _parse_score(path, lineno, token, name, cell)
    raise AssertionError("unreachable: a bad cell raises above")


def _parse_score(path: Path, lineno: int, token: str, attribute: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        what = "empty" if not cell.strip() else f"'{cell}' is not a number"
        raise GuidedFileError(
            f"{path}, line {lineno} ({token}): {attribute} is {what}; expected a float"
        ) from None
    if not math.isfinite(value):
        raise GuidedFileError(
            f"{path}, line {lineno} ({token}): {attribute} is {cell}; expected a finite float"
        )
    return value


@dataclass(frozen=True)
class BaseEmbeddings:
    """Item vectors from any source (a trained recommender, a text encoder), keyed by token."""

    tokens: list[str]
    vectors: np.ndarray  # (len(tokens), dim)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "BaseEmbeddings":
        path = Path(path)
        if not path.is_file():
            raise GuidedFileError(f"{path}: base embedding file not found")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = {"tokens", "vectors"} - set(npz.files)
                if missing:
                    raise GuidedFileError(
                        f"{path}: missing array(s) {sorted(missing)}; expected 'tokens' and 'vectors'"
                    )
                tokens = [str(t) for t in npz["tokens"]]
                vectors = np.asarray(npz["vectors"], dtype=np.float64)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise GuidedFileError(
                f"{path}: cannot read base embeddings ({err}); expected an .npz with "
                "'tokens' and 'vectors' and no pickled objects"
            ) from err
        if vectors.ndim != 2 or vectors.shape[0] != len(tokens):
            raise GuidedFileError(
                f"{path}: 'vectors' has shape {vectors.shape}, expected ({len(tokens)}, dim)"
            )
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if len(bad):
            raise GuidedFileError(
                f"{path}: {len(bad)} vector(s) hold NaN or infinite values, first item '{tokens[bad[0]]}'"
            )
        seen = set()
        for token in tokens:
            if token in seen:
                raise GuidedFileError(f"{path}: duplicate token '{token}'")
            seen.add(token)
        return cls(tokens, vectors)

    def write(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, tokens=np.asarray(self.tokens, dtype=str), vectors=self.vectors)


ALIGN_CHUNK = 1 << 16  # rows copied at once by align_rows


def align_rows(
    tokens: Sequence[str],
    values: np.ndarray,
    id2token: Sequence[str],
    source: str,
    what: str = "item",
    missing: str = "error",
    optional: np.ndarray | None = None,
) -> np.ndarray:
    """Reorder ``values`` into RecBole's internal id order (row i = id i, row 0 = padding, zero).

    Tokens the dataset lacks are ignored (and counted in the log). Dataset tokens that the file
    lacks raise, unless ``missing`` is ``mean`` or ``zero``, which fill them. Ids marked in
    ``optional`` (a boolean mask, e.g. items without training interactions) may be absent: their
    rows stay NaN for the caller to fill.
    """
    if missing not in MISSING_POLICIES:
        raise GuidedFileError(f"missing-items policy '{missing}' unknown; expected one of {MISSING_POLICIES}")
    row_of = {t: i for i, t in enumerate(tokens)}
    # one dictionary lookup per id, then whole-array copies (no Python loop over rows)
    ids = id2token[1:].tolist() if isinstance(id2token, np.ndarray) else id2token[1:]
    rows = np.fromiter(map(row_of.get, ids, repeat(-1)), dtype=np.int64, count=len(ids))
    found = rows >= 0
    out = np.zeros((len(id2token), values.shape[1]), dtype=np.float64)
    hits = np.flatnonzero(found)
    for begin in range(0, len(hits), ALIGN_CHUNK):  # in chunks: no second full-size copy at its peak
        chunk = hits[begin:begin + ALIGN_CHUNK]
        out[chunk + 1] = values[rows[chunk]]
    absent = np.flatnonzero(~found) + 1
    extra = len(row_of) - int(found.sum())
    if optional is not None:
        out[absent[optional[absent]]] = np.nan
        absent = absent[~optional[absent]]
    if extra:
        logger.info(f"{source}: {extra} {what}(s) not in the dataset were ignored")
    if len(absent):
        names = ", ".join(repr(id2token[i]) for i in absent[:10])
        more = f" and {len(absent) - 10} more" if len(absent) > 10 else ""
        if missing == "error":
            raise GuidedFileError(
                f"{source}: {len(absent)} {what}(s) of the dataset are missing: {names}{more}. "
                f"Add them, or set missing_items to 'mean' or 'zero' to fill them."
            )
        fill = values.mean(axis=0) if missing == "mean" else 0.0
        out[absent] = fill
        logger.warning(f"{source}: filled {len(absent)} missing {what}(s) with {missing}: {names}{more}")
    return out

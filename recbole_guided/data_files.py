"""Reading, validating and writing the plugin's own files, and aligning them to RecBole's ids.

* ``<dataset>.guided`` / ``<dataset>.uguided``: tab separated, header ``item_id:token`` (or
  ``user_id:token``) then one ``<attribute>:float`` column per attribute. Human readable on purpose.
* base embeddings: ``.npz`` with ``tokens`` (strings) and ``vectors`` (float matrix).

Rows are always matched by token through RecBole's ``field2id_token``, never by row order.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from recbole_guided.errors import GuidedFileError

logger = logging.getLogger(__name__)

MISSING_POLICIES = ("error", "mean", "zero")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    A reader therefore never sees a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the user expects an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    def read(cls, path: str | os.PathLike, key_field: str | None = None) -> "GuidedTable":
        path = Path(path)
        if not path.is_file():
            raise GuidedFileError(f"{path}: guided file not found")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise GuidedFileError(f"{path}: cannot read guided file ({err})") from err
        if not lines or not lines[0].strip():
            raise GuidedFileError(f"{path}: empty file, expected a header line")
        key, attributes = _parse_header(path, lines[0], key_field)
        tokens, rows, seen = [], [], {}
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) != len(attributes) + 1:
                raise GuidedFileError(
                    f"{path}, line {lineno}: {len(cells)} tab-separated cells, "
                    f"expected {len(attributes) + 1} (token + {len(attributes)} attributes)"
                )
            token = cells[0].strip()
            if not token:
                raise GuidedFileError(f"{path}, line {lineno}: empty {key} token")
            if token in seen:
                raise GuidedFileError(
                    f"{path}, line {lineno}: duplicate {key} '{token}' (first on line {seen[token]})"
                )
            seen[token] = lineno
            tokens.append(token)
            rows.append([_parse_score(path, lineno, token, name, cell)
                         for name, cell in zip(attributes, cells[1:])])
        values = np.asarray(rows, dtype=np.float64).reshape(len(tokens), len(attributes))
        return cls(key, tokens, attributes, values)

    def write(self, path: str | os.PathLike) -> None:
        """Write atomically, in the format that ``read`` accepts."""
        header = "\t".join([f"{self.key_field}:token"] + [f"{a}:float" for a in self.attributes])
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(header + "\n")
                for token, row in zip(self.tokens, self.values):
                    f.write("\t".join([token] + [f"{v:.6g}" for v in row]) + "\n")

    def check_attributes(self, expected: Sequence[str], source: str, path=None) -> None:
        if list(expected) != list(self.attributes):
            where = f"{path}, line 1: " if path else ""
            raise GuidedFileError(
                f"{where}guided attributes {self.attributes} do not match {source}, "
                f"which expects {list(expected)} (same names, same order)"
            )


def _parse_header(path: Path, header: str, key_field: str | None) -> tuple[str, list[str]]:
    cells = header.split("\t")
    first = cells[0].strip()
    if not first.endswith(":token") or (key_field and first != f"{key_field}:token"):
        want = f"{key_field}:token" if key_field else "<field>:token"
        raise GuidedFileError(f"{path}, line 1: first header cell is '{first}', expected '{want}'")
    attributes = []
    for cell in cells[1:]:
        name, _, kind = cell.strip().rpartition(":")
        if kind != "float" or not name:
            raise GuidedFileError(
                f"{path}, line 1: header cell '{cell}' should be '<attribute>:float'"
            )
        if name in attributes:
            raise GuidedFileError(f"{path}, line 1: attribute '{name}' appears twice")
        attributes.append(name)
    if not attributes:
        raise GuidedFileError(f"{path}, line 1: no '<attribute>:float' columns after the token")
    return first[: -len(":token")], attributes


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


def align_rows(
    tokens: Sequence[str],
    values: np.ndarray,
    id2token: Sequence[str],
    source: str,
    what: str = "item",
    missing: str = "error",
) -> np.ndarray:
    """Reorder ``values`` into RecBole's internal id order (row i = id i, row 0 = padding, zero).

    Tokens the dataset lacks are ignored (and counted in the log). Dataset tokens that the file
    lacks raise, unless ``missing`` is ``mean`` or ``zero``, which fill them.
    """
    if missing not in MISSING_POLICIES:
        raise GuidedFileError(f"missing-items policy '{missing}' unknown; expected one of {MISSING_POLICIES}")
    row_of = {t: i for i, t in enumerate(tokens)}
    out = np.zeros((len(id2token), values.shape[1]), dtype=np.float64)
    absent = []
    for idx in range(1, len(id2token)):
        row = row_of.get(id2token[idx])
        if row is None:
            absent.append(idx)
        else:
            out[idx] = values[row]
    extra = len(row_of) - (len(id2token) - 1 - len(absent))
    if extra:
        logger.info(f"{source}: {extra} {what}(s) not in the dataset were ignored")
    if absent:
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

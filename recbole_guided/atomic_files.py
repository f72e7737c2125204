"""Every atomic file the plugin reads or writes (``.inter``, ``.item``, ``.guided``, ``.uguided``).

The format is RecBole's: a header of ``name:type`` cells, then one row per line, cells split by
``field_separator`` and ``token_seq`` values split by ``seq_separator``. Field names are the
dataset's own (``USER_ID_FIELD``, ``ITEM_ID_FIELD``), and tokens stay strings throughout.
Errors name the file, the line and what was expected.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from recbole_guided.errors import GuidedFileError

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass(frozen=True)
class AtomicFormat:
    """How a dataset's atomic files are written: separators and the user and item id fields."""

    field_separator: str = "\t"
    seq_separator: str = " "
    user_field: str = "user_id"
    item_field: str = "item_id"
    encoding: str = "utf-8"

    @classmethod
    def from_config(cls, config) -> "AtomicFormat":
        return cls(field_separator=config["field_separator"] or "\t", seq_separator=config["seq_separator"] or " ",
                   user_field=config["USER_ID_FIELD"], item_field=config["ITEM_ID_FIELD"],
                   encoding=config["encoding"] or "utf-8")


@dataclass
class AtomicTable:
    """The cells of an atomic file as strings: ``columns[field][row]``."""

    path: Path
    fields: list[str]
    types: dict[str, str]
    columns: dict[str, list[str]]
    lines: list[int]  # the file's line number of each row, for error messages

    def __len__(self) -> int:
        return len(self.lines)

    def sequences(self, field: str, fmt: AtomicFormat) -> list[list[str]]:
        """A ``token_seq`` column, each cell split by ``seq_separator``."""
        return [cell.split(fmt.seq_separator) if cell else [] for cell in self.columns[field]]


def require_fields(path: Path, present: Sequence[str], wanted: Sequence[str], why: str = "") -> None:
    missing = [f for f in wanted if f not in present]
    if missing:
        because = f" ({why})" if why else ""
        raise GuidedFileError(f"{path}, line 1: no field {', '.join(map(repr, missing))}{because}; "
                              f"the file has {list(present)}")


def parse_header(path: Path, line: str, fmt: AtomicFormat) -> tuple[list[str], dict[str, str]]:
    fields, types = [], {}
    for cell in line.rstrip("\r\n").split(fmt.field_separator):
        name, _, kind = cell.strip().rpartition(":")
        if cell.count(":") > 1:  # several cells run together: the file uses another separator
            raise GuidedFileError(f"{path}, line 1: header cell {cell[:80]!r} holds {cell.count(':')} 'name:type' "
                                  f"pairs; expected one per cell, split by field_separator {fmt.field_separator!r}")
        if not name or kind not in FIELD_TYPES:
            raise GuidedFileError(f"{path}, line 1: header cell {cell!r} should be 'name:type' with type one of "
                                  f"{FIELD_TYPES} (cells split by field_separator {fmt.field_separator!r})")
        if name in types:
            raise GuidedFileError(f"{path}, line 1: field '{name}' appears twice")
        fields.append(name)
        types[name] = kind
    return fields, types


def read_header(path: str | os.PathLike, fmt: AtomicFormat = AtomicFormat()) -> dict[str, str]:
    """Field name -> type, from the first line only."""
    path = Path(path)
    try:
        with open(path, encoding=fmt.encoding) as f:
            return parse_header(path, f.readline(), fmt)[1]
    except (OSError, UnicodeDecodeError) as err:
        raise GuidedFileError(f"{path}: cannot read the header ({err})") from err


def read_atomic(path: str | os.PathLike, fmt: AtomicFormat = AtomicFormat(), what: str = "atomic file",
                fields: Sequence[str] | None = None) -> AtomicTable:
    """Read an atomic file; ``fields`` (if given) must be present and are the only ones kept."""
    path = Path(path)
    if not path.is_file():
        raise GuidedFileError(f"{path}: {what} not found")
    try:
        with open(path, encoding=fmt.encoding) as f:
            header = f.readline()
            if not header.strip():
                raise GuidedFileError(f"{path}: empty file, expected a header line of 'name:type' cells")
            names, types = parse_header(path, header, fmt)
            if fields is not None:
                require_fields(path, names, fields, what)
            keep = [(k, name) for k, name in enumerate(names) if fields is None or name in fields]
            columns, lines = {name: [] for _, name in keep}, []
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                cells = line.split(fmt.field_separator)
                if len(cells) != len(names):
                    raise GuidedFileError(f"{path}, line {lineno}: {len(cells)} cells, expected {len(names)} "
                                          f"({', '.join(names)}) split by {fmt.field_separator!r}")
                for k, name in keep:
                    columns[name].append(cells[k].strip())
                lines.append(lineno)
    except (OSError, UnicodeDecodeError) as err:
        raise GuidedFileError(f"{path}: cannot read {what} ({err})") from err
    return AtomicTable(path, [name for _, name in keep], {name: types[name] for _, name in keep}, columns, lines)


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, header: Sequence[tuple[str, str]], rows: Iterable[Sequence[str]],
                 fmt: AtomicFormat = AtomicFormat()) -> None:
    """Write ``header`` (``(name, type)`` pairs) and ``rows`` (already formatted cells) atomically."""
    sep = fmt.field_separator
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=fmt.encoding) as f:
            f.write(sep.join(f"{name}:{kind}" for name, kind in header) + "\n")
            for row in rows:
                f.write(sep.join(row) + "\n")

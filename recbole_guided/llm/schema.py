"""Attribute schemas: what a salesperson in a domain rates, on which scale, from which item text.

A schema is a YAML file (``properties/attributes/<domain>.yaml`` or any path): users add their own
without code. ``AttributeSchema.load`` checks every key and names the file and what was expected.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from recbole_guided.errors import GuidedFileError
from recbole_guided.resources import SCHEMA_DIR  # the shipped schemas, wherever the plugin is installed

ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # also a column name in the .guided header
REQUIRED_KEYS = ("domain", "framing", "item_template", "scale", "attributes")
ATTRIBUTE_KEYS = ("name", "description", "low", "high")
DEFAULT_USER_FRAMING = (
    "You know this customer from what they chose before. Judge what they look for, on the same "
    "attributes you use for the products."
)


@dataclass(frozen=True)
class Attribute:
    name: str
    description: str
    low: str
    high: str


@dataclass(frozen=True)
class Example:
    """An anchored example shown in the prompt: an item's text and the scores it deserves."""
    item: str
    scores: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class AttributeSchema:
    domain: str
    framing: str            # who the LLM is: an experienced salesperson of the domain
    item_template: str      # str.format template over the .item fields (names without ':type')
    scale_min: int
    scale_max: int
    attributes: tuple[Attribute, ...]
    user_framing: str = DEFAULT_USER_FRAMING
    source: str = "<memory>"
    examples: tuple[Example, ...] = ()  # optional: rated items shown before the item to rate

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @property
    def scale(self) -> list[int]:
        return list(range(self.scale_min, self.scale_max + 1))

    @property
    def template_fields(self) -> list[str]:
        return [field for _, field, _, _ in string.Formatter().parse(self.item_template) if field]

    @classmethod
    def load(cls, name_or_path: str | Path) -> "AttributeSchema":
        """A shipped schema by name (``movies``) or any YAML file by path."""
        path = Path(name_or_path)
        if not path.suffix and not path.exists():
            path = SCHEMA_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in SCHEMA_DIR.glob("*.yaml"))
            raise GuidedFileError(f"{path}: attribute schema not found (shipped schemas: {shipped})")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise GuidedFileError(f"{path}: cannot read attribute schema ({err})") from err
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data, source: str) -> "AttributeSchema":
        if not isinstance(data, dict):
            raise GuidedFileError(f"{source}: expected a mapping with keys {list(REQUIRED_KEYS)}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise GuidedFileError(f"{source}: missing key(s) {missing}; a schema needs {list(REQUIRED_KEYS)}")
        scale = data["scale"]
        if not (isinstance(scale, dict) and isinstance(scale.get("min"), int) and isinstance(scale.get("max"), int)
                and 0 <= scale["min"] < scale["max"] <= 9):
            raise GuidedFileError(
                f"{source}: 'scale' must be {{min: int, max: int}} with 0 <= min < max <= 9 "
                f"(single-digit scores, one token each), got {scale!r}")
        raw = data["attributes"]
        if not isinstance(raw, list) or not raw:
            raise GuidedFileError(f"{source}: 'attributes' is empty; expected a list of "
                                  f"mappings with keys {list(ATTRIBUTE_KEYS)}")
        attributes, seen = [], set()
        for k, entry in enumerate(raw, start=1):
            where = f"{source}: attribute #{k}"
            if not isinstance(entry, dict):
                raise GuidedFileError(f"{where}: expected a mapping with keys {list(ATTRIBUTE_KEYS)}")
            absent = [key for key in ATTRIBUTE_KEYS if not str(entry.get(key) or "").strip()]
            if absent:
                raise GuidedFileError(f"{where} ({entry.get('name', '?')}): missing key(s) {absent}")
            name = str(entry["name"])
            if not ATTRIBUTE_NAME.match(name):
                raise GuidedFileError(f"{where}: name '{name}' must be lower case letters, digits and '_'")
            if name in seen:
                raise GuidedFileError(f"{where}: duplicate attribute name '{name}'")
            seen.add(name)
            attributes.append(Attribute(name, *(str(entry[key]).strip() for key in ATTRIBUTE_KEYS[1:])))
        examples = cls._examples(data.get("examples") or [], [a.name for a in attributes],
                                 scale["min"], scale["max"], source)
        return cls(
            domain=str(data["domain"]), framing=str(data["framing"]).strip(), examples=examples,
            item_template=str(data["item_template"]).strip(), scale_min=scale["min"],
            scale_max=scale["max"], attributes=tuple(attributes),
            user_framing=str(data.get("user_framing") or DEFAULT_USER_FRAMING).strip(), source=source,
        )

    @staticmethod
    def _examples(raw, names: list[str], lo: int, hi: int, source: str) -> tuple[Example, ...]:
        if not isinstance(raw, list):
            raise GuidedFileError(f"{source}: 'examples' must be a list of {{item: text, scores: {{attribute: score}}}}")
        examples = []
        for k, entry in enumerate(raw, start=1):
            where = f"{source}: example #{k}"
            if not (isinstance(entry, dict) and str(entry.get("item") or "").strip()
                    and isinstance(entry.get("scores"), dict)):
                raise GuidedFileError(f"{where}: expected {{item: text, scores: {{attribute: score}}}}")
            scores = entry["scores"]
            if sorted(scores) != sorted(names):
                raise GuidedFileError(f"{where}: scores must name every attribute {names} once, got {sorted(scores)}")
            bad = {n: v for n, v in scores.items() if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi}
            if bad:
                raise GuidedFileError(f"{where}: scores must be whole numbers from {lo} to {hi}, got {bad}")
            examples.append(Example(str(entry["item"]).strip(), tuple((n, scores[n]) for n in names)))
        return tuple(examples)

    def check_item_fields(self, fields: list[str], item_file: str) -> None:
        absent = [f for f in self.template_fields if f not in fields]
        if absent:
            raise GuidedFileError(
                f"{self.source}: item_template uses field(s) {absent} that {item_file} does not have "
                f"(its fields: {fields})")

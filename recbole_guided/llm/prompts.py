"""What the LLM reads: item (or user) text from the atomic files, the salesperson prompt, and the
answer format, plus the validation of free-form (``generate``) answers."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from recbole_guided.atomic_files import AtomicFormat, read_atomic, read_header
from recbole_guided.errors import GuidedError, GuidedFileError
from recbole_guided.llm.schema import AttributeSchema

MODES = ("logprob", "generate")


class AnswerError(GuidedError):
    """An LLM answer that does not follow the schema (recorded, retried, reported)."""


def read_item_texts(item_file: str | Path, schema: AttributeSchema,
                    fmt: AtomicFormat = AtomicFormat()) -> dict[str, str]:
    """Item token (the dataset's ``ITEM_ID_FIELD``) -> the text the LLM reads, rendered with the
    schema's ``item_template``. A ``token_seq`` value reads as its elements joined by ", " (as they
    are, when ``seq_separator`` is a space: then they are usually the words of a title)."""
    fields = read_header(item_file, fmt) if Path(item_file).is_file() else {}
    if not fields:
        raise GuidedFileError(f"{item_file}: item file not found (the LLM reads the items' text from it)")
    if fmt.item_field not in fields:
        raise GuidedFileError(f"{item_file}, line 1: no item field '{fmt.item_field}' (ITEM_ID_FIELD); the file has "
                              f"{list(fields)}. Set ITEM_ID_FIELD in a --config_files YAML.")
    schema.check_item_fields(list(fields), str(item_file))
    table = read_atomic(item_file, fmt, what="item file", fields=[fmt.item_field, *schema.template_fields])
    columns = {name: _readable(table, name, fmt) for name in schema.template_fields}
    return {token: schema.item_template.format(**{name: column[row] for name, column in columns.items()})
            for row, token in enumerate(table.columns[fmt.item_field])}


def _readable(table, field: str, fmt: AtomicFormat) -> list[str]:
    if table.types[field] != "token_seq" or fmt.seq_separator == " ":
        return table.columns[field]
    return [", ".join(values) for values in table.sequences(field, fmt)]


def _attribute_lines(schema: AttributeSchema) -> str:
    lo, hi = schema.scale_min, schema.scale_max
    return "\n".join(f"- {a.name}: {a.description} ({lo} = {a.low}; {hi} = {a.high})" for a in schema.attributes)


def answer_instructions(schema: AttributeSchema, mode: str) -> str:
    lo, hi = schema.scale_min, schema.scale_max
    if mode == "logprob":
        return (f"Answer with one line per attribute, in the order above, written as "
                f"`<attribute>: <score>` with a whole number from {lo} to {hi}, and nothing else.")
    example = ", ".join(f'"{name}": <{lo}-{hi}>' for name in schema.names)
    return (f"Answer with a JSON object and nothing else: {{{example}}}, "
            f"each score a whole number from {lo} to {hi}.")


def _examples(schema: AttributeSchema, kind: str, mode: str) -> str:
    """The schema's anchored examples, answered in the mode's own format (part of the shared prefix)."""
    blocks = []
    for example in schema.examples:
        answer = "\n".join(f"{n}: {v}" for n, v in example.scores) if mode == "logprob" \
            else json.dumps(dict(example.scores))
        blocks.append(f"Example. The {kind}: {example.item}\n{answer}")
    return "".join(f"\n\n{block}" for block in blocks)


SUBJECT_SEPARATOR = "\n\n---\n"  # everything before it is the same for every item of a schema


def item_messages(schema: AttributeSchema, item_text: str, mode: str) -> list[dict]:
    """Instructions first and the item last, so a local model computes the shared part once."""
    kind = schema.domain.rstrip("s")
    question = (f"Rate the {kind} below from {schema.scale_min} (low) to {schema.scale_max} (high) on "
                f"each attribute.\n\nAttributes:\n{_attribute_lines(schema)}\n\n"
                f"{answer_instructions(schema, mode)}{_examples(schema, kind, mode)}"
                f"{SUBJECT_SEPARATOR}The {kind}: {item_text}")
    return [{"role": "system", "content": schema.framing}, {"role": "user", "content": question}]


def user_messages(schema: AttributeSchema, history_texts: list[str], mode: str) -> list[dict]:
    history = "\n".join(f"{k}. {text}" for k, text in enumerate(history_texts, start=1))
    question = (f"{schema.user_framing}\n\nRate how much the customer below wants each attribute, from "
                f"{schema.scale_min} (not at all) to {schema.scale_max} (very much).\n\n"
                f"Attributes:\n{_attribute_lines(schema)}\n\n{answer_instructions(schema, mode)}"
                f"{SUBJECT_SEPARATOR}What the customer chose, most recent last:\n{history}")
    return [{"role": "system", "content": schema.framing}, {"role": "user", "content": question}]


class RenderedPrompts(Mapping):
    """Token -> chat prompt, rendered from ``sources[token]`` each time it is asked for.

    A prompt is about 2 KB: a million of them held at once would take 2 GB, while the scorer needs
    each one only twice (to hash it, and to ask it if it is not in the cache).
    """

    def __init__(self, sources: Mapping, render: Callable[[object], list[dict]]):
        self.sources, self.render = sources, render

    def __getitem__(self, token: str) -> list[dict]:
        return self.render(self.sources[token])

    def __iter__(self):
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)


def shared_prefix(text: str) -> str:
    """The part of a rendered prompt that does not depend on the item (empty if none is marked)."""
    cut = text.find(SUBJECT_SEPARATOR)
    return "" if cut < 0 else text[:cut + len(SUBJECT_SEPARATOR)]


def answer_prefix(attribute: str) -> str:
    """Where ``logprob`` mode reads the score distribution: right after ``"<attribute>: "``."""
    return f"{attribute}: "


def plain_text(messages: list[dict]) -> str:
    """A chat rendered for models or servers without a chat template."""
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def prompt_hash(messages: list[dict], mode: str) -> str:
    """Identifies the question asked: a changed schema, template or mode is asked again."""
    payload = json.dumps({"messages": messages, "mode": mode}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def parse_json_answer(text: str, schema: AttributeSchema) -> dict[str, float]:
    """Scores from a ``generate`` answer, or ``AnswerError`` saying what is wrong with it."""
    match = re.search(r"\{.*?\}", text, flags=re.S)
    if not match:
        if "{" in text:  # opened but never closed: often a model that keeps adding keys until max_new_tokens
            raise AnswerError(f"unclosed JSON object in the answer ({len(text)} characters; "
                              f"it begins {text[:60]!r} and ends {text[-60:]!r})")
        raise AnswerError(f"no JSON object in the answer: {text[:120]!r}")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise AnswerError(f"invalid JSON ({err.msg}): {match.group(0)[:120]!r}") from err
    if not isinstance(data, dict):
        raise AnswerError(f"expected a JSON object, got {type(data).__name__}")
    missing = [name for name in schema.names if name not in data]
    if missing:
        raise AnswerError(f"attribute(s) {missing} missing from the answer")
    scores = {}
    for name in schema.names:
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AnswerError(f"{name}: expected a number, got {value!r}")
        if not schema.scale_min <= value <= schema.scale_max:
            raise AnswerError(f"{name}: {value} is outside the scale {schema.scale_min}..{schema.scale_max}")
        scores[name] = float(value)
    return scores

"""The plugin's own config keys, read and validated in one place.

Their defaults and meanings are in ``properties/model/guided.yaml``; ``GuidedOptions.from_config``
reads them from a RecBole config and refuses a bad value before any file is read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from recbole_guided.errors import ConfigError

GUIDED_SOURCES = ("file", "random", "metadata")
NORMALIZATIONS = ("zscore", "minmax", "none")
CENTERINGS = ("item", "none")
MISSING_POLICIES = ("error", "mean", "zero")
USER_INITS = ("history", "file")
COLD_ITEMS = ("attributes", "mean", "train")


@dataclass(frozen=True)
class GuidedOptions:
    guided_file: str | None
    guided_attributes: str | None
    guided_source: str
    metadata_field: str | None
    guided_center: str
    guided_norm: str
    guided_scale: float | str
    guided_trainable: bool
    use_guided: bool
    base_embedding_file: str | None
    base_model: str | None
    base_dim: int | None
    base_trainable: bool
    use_base: bool
    missing_items: str
    cold_items: str
    user_guided: bool
    user_guided_init: str
    user_guided_file: str | None
    user_guided_trainable: bool
    compare_with_parent: bool | None

    @classmethod
    def from_config(cls, config) -> "GuidedOptions":
        options = cls(**{f.name: config[f.name] for f in fields(cls)})
        options.validate()
        return options

    def validate(self) -> None:
        for key, allowed in (("guided_source", GUIDED_SOURCES), ("guided_norm", NORMALIZATIONS),
                             ("guided_center", CENTERINGS), ("missing_items", MISSING_POLICIES), ("user_guided_init", USER_INITS),
                             ("cold_items", COLD_ITEMS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} '{getattr(self, key)}' unknown; expected one of {allowed}")
        try:
            scale_factor(self.guided_scale)
        except (TypeError, ValueError):
            raise ConfigError(f"guided_scale '{self.guided_scale}': expected a number, 'auto' or 'auto*<number>' "
                              "(e.g. auto*4: four times the automatic scale)") from None
        if self.base_dim is not None and (not isinstance(self.base_dim, int) or self.base_dim < 0):
            raise ConfigError(f"base_dim '{self.base_dim}': expected a whole number >= 0")
        if not self.use_base and not self.use_guided:
            raise ConfigError("use_base and use_guided are both False: the refined embedding would be empty")
        if self.compare_with_parent is False and not self.base_embedding_file:
            raise ConfigError("compare_with_parent is False but base_embedding_file is not set: without it the "
                              "parent must be trained for the base part (and is then the comparison)")

    @property
    def needs_guided_file(self) -> bool:
        """``random`` reads the file too: its shape (the number of attributes) comes from it."""
        return self.use_guided and self.guided_source in ("file", "random")


def scale_factor(option) -> tuple[bool, float]:
    """``guided_scale`` as ``(relative to auto?, factor)``: ``auto`` -> (True, 1), ``auto*4`` -> (True, 4),
    ``0.5`` -> (False, 0.5)."""
    text = str(option).replace(" ", "")
    if text == "auto":
        return True, 1.0
    if text.startswith("auto*"):
        return True, float(text[len("auto*"):])
    return False, float(option)


PLUGIN_KEYS = tuple(f.name for f in fields(GuidedOptions))

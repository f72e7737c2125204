"""Where the plugin's shipped defaults live: model YAMLs, attribute schemas and the bundled ml-100k.

In a source checkout (and an editable install) they are the top-level ``properties/`` and
``dataset/`` folders, the ones a user reads and copies from. A wheel carries the same folders
inside the package (``setup.cfg`` maps them to ``recbole_guided/properties`` and
``recbole_guided/dataset``), so an installed plugin finds them from any working directory.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name


PROPERTIES = _shipped("properties")
BUNDLED_DATA = _shipped("dataset")
SCHEMA_DIR = PROPERTIES / "attributes"


def plugin_yaml(*parts: str) -> Path:
    """A file under the shipped ``properties/`` (it may not exist: callers check)."""
    return PROPERTIES.joinpath(*parts)

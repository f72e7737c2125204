"""A RecBole ``Config`` that knows the plugin's models and defaults (the RecBole-GNN pattern)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from recbole.config import Config
from recbole.utils import get_model as recbole_get_model

from recbole_guided.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
PROPERTIES = REPO_ROOT / "properties"
BUNDLED_DATA = REPO_ROOT / "dataset"

# The keys the plugin adds to its parents' (documented in properties/model/Guided*.yaml).
PLUGIN_KEYS = (
    "guided_file", "guided_attributes", "guided_source", "metadata_field", "guided_norm", "guided_scale", "guided_trainable",
    "use_guided", "base_embedding_file", "base_model", "base_dim", "base_trainable", "use_base",
    "missing_items", "user_guided", "user_guided_init", "user_guided_file", "user_guided_trainable",
)


def plugin_models() -> dict:
    from recbole_guided.models import GuidedBERT4Rec, GuidedGRU4Rec, GuidedSASRec

    return {cls.__name__: cls for cls in (GuidedSASRec, GuidedBERT4Rec, GuidedGRU4Rec)}


def get_model(name: str):
    """A plugin model or any RecBole model, by name; a clear error for anything else."""
    models = plugin_models()
    if name in models:
        return models[name]
    try:
        return recbole_get_model(name)
    except (ValueError, ImportError):  # RecBole's fallback import of lightgbm/xgboost also lands here
        raise ConfigError(
            f"unknown model '{name}': expected one of {', '.join(models)} or a RecBole model name (e.g. SASRec)"
        ) from None


class GuidedConfig(Config):
    """RecBole's Config, plus: plugin model names resolve, plugin YAML defaults load at internal
    priority (user YAML, ``config_dict`` and ``--key=value`` still win), and command-line
    overrides come only from ``cmd_args`` (RecBole reads whatever ``sys.argv`` holds, which breaks
    in notebooks, tests and any program with its own arguments).
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
        self._cmd_args = list(cmd_args)
        super().__init__(model, dataset, config_file_list, config_dict)

    def _load_cmd_line(self):
        saved_argv = sys.argv
        sys.argv = [saved_argv[0] if saved_argv else "recbole-guided", *self._cmd_args]
        try:
            return super()._load_cmd_line()
        finally:
            sys.argv = saved_argv

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _set_default_parameters(self):
        data_root = self.final_config_dict["data_path"]
        super()._set_default_parameters()
        # RecBole 1.2.1 points ml-100k at its own example copy whatever data_path says, so a
        # user's ml-100k files (e.g. ml-100k.guided) would be ignored: honour data_path.
        self.final_config_dict["data_path"] = os.path.join(data_root, self.dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        # ./dataset/<name> as RecBole users expect; else the copy shipped with the plugin,
        # so that RecBole never tries to download ml-100k from the internet.
        if not (Path("dataset") / dataset).is_dir() and (BUNDLED_DATA / dataset).is_dir():
            self.internal_config_dict["data_path"] = str(BUNDLED_DATA)
        for defaults in (
            PROPERTIES / "overall.yaml",
            PROPERTIES / "model" / f"{model}.yaml",
            PROPERTIES / "dataset" / f"{dataset}.yaml",
        ):
            if defaults.is_file():
                self._update_internal_config_dict(str(defaults))

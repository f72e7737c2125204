"""A RecBole ``Config`` that knows the plugin's models and defaults (the RecBole-GNN pattern)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from recbole.config import Config
from recbole.utils import get_model as recbole_get_model

from recbole_guided.distributed import init_rank, is_spawned, refuse_unspawned
from recbole_guided.errors import ConfigError
from recbole_guided.models import GUIDED_MODELS
from recbole_guided.options import PLUGIN_KEYS, GuidedOptions
from recbole_guided.resources import BUNDLED_DATA, plugin_yaml


def get_model(name: str):
    """A plugin model or any RecBole model, by name; a clear error for anything else."""
    if name in GUIDED_MODELS:
        return GUIDED_MODELS[name]
    try:
        return recbole_get_model(name)
    except (ValueError, ImportError):  # RecBole's fallback import of lightgbm/xgboost also lands here
        raise ConfigError(
            f"unknown model '{name}': expected one of {', '.join(GUIDED_MODELS)} or a RecBole model name (e.g. SASRec)"
        ) from None


def is_guided(model_name: str) -> bool:
    return model_name in GUIDED_MODELS


def parent_model(model_name: str) -> str:
    """The RecBole model a Guided model refines (``GuidedSASRec`` -> ``SASRec``)."""
    if model_name not in GUIDED_MODELS:
        raise ConfigError(f"'{model_name}' is not a Guided model; expected one of {', '.join(GUIDED_MODELS)}")
    return GUIDED_MODELS[model_name].parent_class().__name__


# Options added after a checkpoint was written are absent from its stored config: the value that
# reproduces how it was trained, not today's default (which would re-center its attributes, or
# re-place rows it trained, when it is loaded).
BEFORE_THE_OPTION = {"guided_center": "none", "cold_items": "train"}


def checkpoint_config(checkpoint: dict) -> dict:
    """The config dict that rebuilds a checkpoint's model: what its run was given, plus (for a Guided
    model) the plugin options it was trained with, from its stored final config, so that a default
    changed since does not change the model."""
    given = json.loads(checkpoint["external_config"])
    if not is_guided(checkpoint["model"]):
        return given
    stored = json.loads(checkpoint.get("config") or "{}")
    return {**given, **{key: stored[key] if key in stored else BEFORE_THE_OPTION[key]
                        for key in PLUGIN_KEYS if key in stored or key in BEFORE_THE_OPTION}}


class GuidedConfig(Config):
    """RecBole's Config, plus:

    * plugin model names resolve, and a Guided model starts from its parent's RecBole defaults,
      then the plugin keys (``properties/model/guided.yaml``), then its own YAML, all at internal
      priority (user YAML, ``config_dict`` and ``--key=value`` still win);
    * the plugin keys are validated at once (``GuidedOptions``), before any file is read;
    * ``train_neg_sample_args`` follows ``loss_type`` unless the user sets it (RecBole's default
      samples negatives, which its own CE models then refuse);
    * ``data_path`` is honoured for ml-100k too, falling back to the bundled copy, and a missing
      dataset folder is a clear error rather than an attempt to download it;
    * command-line overrides come only from ``cmd_args`` (RecBole reads whatever ``sys.argv``
      holds, which breaks in notebooks, tests and any program with its own arguments);
    * in a rank started by ``distributed.spawn``, the device and process group come from
      ``distributed.init_rank`` (``gloo`` on CPU, ``nccl`` on GPU, joined once per process).
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
        self._cmd_args = list(cmd_args)
        super().__init__(model, dataset, config_file_list, config_dict)
        if is_guided(self.model):
            GuidedOptions.from_config(self)

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

    def _load_internal_config_dict(self, model, model_class, dataset):
        guided = is_guided(model)
        # A Guided model gets everything RecBole gives its parent, by the parent's name.
        super()._load_internal_config_dict(parent_model(model) if guided else model, model_class, dataset)
        # ./dataset/<name> as RecBole users expect; else the copy shipped with the plugin,
        # so that RecBole never tries to download ml-100k from the internet.
        if not (Path("dataset") / dataset).is_dir() and (BUNDLED_DATA / dataset).is_dir():
            self.internal_config_dict["data_path"] = str(BUNDLED_DATA)
        defaults = [plugin_yaml("model", "guided.yaml"), plugin_yaml("model", f"{model}.yaml")] if guided else []
        for path in (*defaults, plugin_yaml("dataset", f"{dataset}.yaml")):
            if path.is_file():
                self._update_internal_config_dict(str(path))

    def _set_default_parameters(self):
        final = self.final_config_dict
        if final.get("loss_type") == "CE" and "train_neg_sample_args" not in self.external_config_dict:
            final["train_neg_sample_args"] = None
        data_root = final["data_path"]
        super()._set_default_parameters()
        # RecBole 1.2.1 points ml-100k at its own example copy whatever data_path says, so a
        # user's ml-100k files (e.g. ml-100k.guided) would be ignored: honour data_path.
        folder = Path(data_root) / self.dataset
        if not folder.is_dir():
            raise ConfigError(f"dataset '{self.dataset}': no folder {folder} (expected the atomic files "
                              f"{self.dataset}.inter, ... there; set data_path to the folder that holds {self.dataset}/)")
        final["data_path"] = str(folder)
        refuse_unspawned(final)

    def _init_device(self):
        if is_spawned(self.final_config_dict):
            init_rank(self.final_config_dict)
        else:
            super()._init_device()

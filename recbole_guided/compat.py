"""Everything that works around RecBole 1.2.1 on today's stack lives here.

* ``recbole.quick_start`` is never imported: it imports ``ray`` 2.6.3, which fails on a fresh
  environment. The plugin has its own run function (``recbole_guided.quick_start``).
* RecBole's checkpoints pickle the whole Config (classes included), so torch >= 2.6 refuses them
  and ``Trainer.evaluate(load_best_model=True)`` fails. ``SafeTrainer`` writes checkpoints of plain
  tensors and plain values only, and reads them back with ``weights_only=True``: loading a
  checkpoint never executes pickled code.
* RecBole names a checkpoint ``<model>-<local time to the second>.pth``: two runs started in the
  same second (parallel sweep processes) wrote one file, and each evaluated whichever model was
  saved last. ``SafeTrainer`` adds the process id (and a counter within a process).
* Importing RecBole's sequential models runs its ``sine.py``, which calls
  ``torch.autograd.set_detect_anomaly(True)`` for the whole process: every autograd op then
  records a Python stack trace, and training steps of SASRec, BERT4Rec and GRU4Rec ran 1.7 to 2
  times slower (``benchmarks/anomaly_cost.py``). Anomaly detection changes no number, so importing this module turns it off again.
* RecBole wraps the model in ``DistributedDataParallel`` with ``device_ids=[local_rank]``, which
  DDP refuses for a model on the CPU (the ``gloo`` backend): ``SafeTrainer`` wraps it with
  ``distributed.wrap_model`` instead, and lets global rank 0 alone write and read checkpoints.
* RecBole 1.2.1's dataset code calls pandas in ways pandas 2 deprecates: dozens of
  ``FutureWarning`` lines per run, none of which concerns the user. They are silenced for RecBole's
  own modules only; warnings raised from anywhere else still show.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import random
import time
import warnings
from pathlib import Path

import numpy as np
import recbole.model.sequential_recommender  # noqa: F401  (for the side effect undone below)
import torch
from recbole.trainer import Trainer
from recbole.trainer.trainer import AbstractTrainer

from recbole_guided.distributed import is_main, share_model, wrap_model
from recbole_guided.errors import CheckpointError

torch.autograd.set_detect_anomaly(False)
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")

CHECKPOINT_FORMAT = "recbole-guided/1"


def plain_config(config) -> dict:
    """The config's values as JSON-safe plain values (classes, devices and enums become strings)."""
    return json.loads(json.dumps(config.final_config_dict, default=str, sort_keys=True))


def item_tokens(dataset) -> list[str]:
    return [str(t) for t in dataset.field2id_token[dataset.iid_field]]


def user_tokens(dataset) -> list[str]:
    return [str(t) for t in dataset.field2id_token[dataset.uid_field]]


_PLAIN = (torch.Tensor, int, float, str, bool, type(None), torch.Size, torch.dtype)


def _check_plain(value, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            _check_plain(item, f"{where}[{k}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"checkpoint value {where} is a {type(value).__name__}; only plain values are saved")


def save_checkpoint(path, **state) -> None:
    """Write a checkpoint of plain values; refuse anything that would need pickling code."""
    state = {"format": CHECKPOINT_FORMAT, **state}
    _check_plain(state, "checkpoint")
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``; a file carrying pickled objects is refused, not executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load, the file carries pickled Python objects that would run code "
            f"(only checkpoints of plain tensors and values are loaded). Detail: {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a recbole-guided checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    return checkpoint


def check_checkpoint_matches(checkpoint: dict, path, model_name: str, dataset) -> None:
    """A checkpoint trained for another model or on another item vocabulary is refused."""
    if checkpoint["model"] != model_name:
        raise CheckpointError(f"{path}: made for model {checkpoint['model']}, not {model_name}")
    if checkpoint["dataset"] != dataset.dataset_name or checkpoint["item_tokens"] != item_tokens(dataset):
        raise CheckpointError(
            f"{path}: made for dataset {checkpoint['dataset']} with {len(checkpoint['item_tokens'])} item ids, "
            f"not {dataset.dataset_name} with {dataset.item_num} (the item ids must be the same)"
        )


def _rng_state(train_data) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _to_lists(random.getstate()),
        "train_loader": train_data.generator.get_state() if train_data is not None else None,
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict, train_data) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_to_tuples(state["python"]))
    if train_data is not None and state["train_loader"] is not None:
        train_data.generator.set_state(state["train_loader"])
    if state.get("cuda") and torch.cuda.is_available():  # checkpoints written before it was kept lack it
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


_handed_out: set[str] = set()


def unique_checkpoint_name(recbole_name: str) -> str:
    """``<model>-<time>-<pid>.pth``, with ``-2``, ``-3``... for another trainer of this process in the same second."""
    stem, suffix = os.path.splitext(recbole_name)
    for n in itertools.count(1):
        name = f"{stem}-{os.getpid()}{'' if n == 1 else f'-{n}'}{suffix}"
        if name not in _handed_out:
            _handed_out.add(name)
            return name


class _DistributedWrapping(AbstractTrainer):
    """``AbstractTrainer.__init__`` with the DDP wrapping that runs on CPU too. It sits between
    ``Trainer`` and ``AbstractTrainer`` in ``SafeTrainer``'s MRO, so ``Trainer.__init__`` calls it."""

    def __init__(self, config, model):
        self.config = config
        self.model = model
        if not config["single_spec"]:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.distributed_model = wrap_model(config, self.model)


class SafeTrainer(Trainer, _DistributedWrapping):
    """RecBole's Trainer with safe checkpoints, exact resume, per-epoch training times and valid scores.

    On several processes it trains as RecBole's does (DDP, ``DistributedSampler``, ``sync_grad_loss``,
    metrics all-reduced by ``_map_reduce``); global rank 0 alone writes the checkpoint, and loads the
    best one for the others (``distributed.share_model``)."""

    def __init__(self, config, model, dataset):
        super().__init__(config, model)
        self.saved_model_file = unique_checkpoint_name(self.saved_model_file)
        self.dataset = dataset  # names the item ids that a checkpoint is valid for
        self.epoch_seconds: list[float] = []
        self.valid_scores: list[float] = []  # the valid metric at each evaluation, in order
        self._train_data = None
        self._resume_rng = None
        self.rows_trained = 0  # training rows this process saw, over all epochs
        self.rows_evaluated = 0  # evaluation rows this process scored in its last evaluation

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._train_data = train_data
        if self._resume_rng is not None:
            _set_rng_state(self._resume_rng, train_data)
            self._resume_rng = None
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.epoch_seconds.append(time.perf_counter() - start)
        self.rows_trained += len(train_data.sampler)  # this rank's share under a DistributedSampler
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.valid_scores.append(float(score))
        return score, result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not is_main(self.config):  # RecBole's rank-0 guard: one writer per run
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        save_checkpoint(
            saved_model_file,
            model=self.config["model"],
            dataset=self.dataset.dataset_name,
            item_tokens=item_tokens(self.dataset),
            user_tokens=user_tokens(self.dataset),  # for add-items
            config=json.dumps(plain_config(self.config)),
            external_config=json.dumps(self.config.external_config_dict, default=str),
            epoch=epoch,
            cur_step=self.cur_step,
            best_valid_score=float(self.best_valid_score),
            best_valid_result={k: float(v) for k, v in (self.best_valid_result or {}).items()},
            state_dict=self.model.state_dict(),
            other_parameter=self.model.other_parameter(),
            optimizer=self.optimizer.state_dict(),
            rng=_rng_state(self._train_data),
        )
        if verbose:
            self.logger.info(f"Saving current: {saved_model_file}")

    def resume_checkpoint(self, resume_file):
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        check_checkpoint_matches(checkpoint, resume_file, self.config["model"], self.dataset)
        self.saved_model_file = str(resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint["best_valid_result"] or None
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self._resume_rng = checkpoint["rng"]
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            if is_main(self.config):
                checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
                self.model.load_state_dict(checkpoint["state_dict"])
                self.model.load_other_parameter(checkpoint.get("other_parameter"))
                self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
            share_model(self.config, self.model)
        if eval_data:
            self.rows_evaluated = len(eval_data.sampler)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def summary(self) -> dict:
        """What this process did, for the run's per-process table (``pipeline.train_and_evaluate``)."""
        return {
            "rank": 0 if self.config["single_spec"] else self.config["local_rank"] + self.config["offset"],
            "device": str(self.device),
            "rows_trained": self.rows_trained,
            "rows_evaluated": self.rows_evaluated,
            "last_train_loss": float(self.train_loss_dict[max(self.train_loss_dict)]) if self.train_loss_dict else None,
            # equal on every rank when DDP averaged the gradients (the ranks trained on different rows)
            "weights_sum": float(sum(p.detach().double().sum() for p in self.model.parameters())),
        }

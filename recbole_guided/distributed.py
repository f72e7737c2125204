"""Training on several processes, the way RecBole 1.2.1's ``run``/``run_recboles`` does it.

``spawn`` starts ``nproc`` processes on this node with ``torch.multiprocessing``; each gets
``local_rank`` and the keys RecBole's ``run`` adds (``world_size``, ``ip``, ``port``, ``nproc``,
``offset`` = the node's ``group_offset``). ``init_rank`` is RecBole's multi-process branch of
``Config._init_device`` with two changes: the backend is ``nccl`` on GPUs and ``gloo`` on CPU
(RecBole hard-codes ``nccl`` and CUDA), and the process group is made once per process (a run
builds several configs). The other helpers let rank 0 alone write files and decide for everyone.

Every distributed key (``local_rank``, ``world_size``, ``ip``, ``port``, ``nproc``, ``offset``)
is read here.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recbole_guided.errors import ConfigError, GuidedError


def spawn(target, kwargs: dict, nproc: int, world_size: int = -1, ip: str = "localhost", port="5678",
          group_offset: int = 0):
    """Run ``target(**kwargs)`` on ``nproc`` processes of this node; return global rank 0's result
    (``None`` on the other nodes of a multi-node run)."""
    world_size = nproc if world_size == -1 else world_size
    if not 1 <= nproc <= world_size - group_offset:
        raise ConfigError(f"nproc {nproc}, world_size {world_size}, group_offset {group_offset}: expected "
                          f"1 <= nproc and group_offset + nproc <= world_size")
    config_dict = {**(kwargs.get("config_dict") or {}), "world_size": world_size, "ip": ip, "port": str(port),
                   "nproc": nproc, "offset": group_offset}
    queue = mp.get_context("spawn").SimpleQueue()
    processes = mp.spawn(_run_rank, args=(target, {**kwargs, "config_dict": config_dict}, queue),
                         nprocs=nproc, join=False)
    answers = []
    try:
        while not processes.join(timeout=1):
            answers += _drain(queue)  # while the ranks run: a large result must not fill the pipe
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        answers += _drain(queue)
        errors = [value for kind, value in answers if kind == "error"]
        if errors:  # a user error (bad file, bad option) reads the same as in one process
            raise errors[0] from None
        raise
    answers += _drain(queue)
    return next((value for kind, value in answers if kind == "result"), None)


def make_folders(config) -> None:
    """RecBole's ``ensure_dir`` checks, then creates: ranks started together race on it
    (``FileExistsError``). The folders they share are made once, before they start."""
    os.makedirs(os.path.join("log", config["model"]), exist_ok=True)  # init_logger's fixed ./log/<model>
    os.makedirs(config["checkpoint_dir"], exist_ok=True)


def _drain(queue) -> list:
    answers = []
    while not queue.empty():
        answers.append(queue.get())
    return answers


def _run_rank(local_rank: int, target, kwargs: dict, queue) -> None:
    kwargs = {**kwargs, "config_dict": {**kwargs["config_dict"], "local_rank": local_rank}}
    try:
        result = target(**kwargs)
    except GuidedError as err:
        queue.put(("error", err))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if local_rank + kwargs["config_dict"]["offset"] == 0:
        queue.put(("result", result))


def is_spawned(final: dict) -> bool:
    """A config made inside a rank started by ``spawn`` (RecBole's test: ``local_rank`` is set)."""
    return "local_rank" in final


def refuse_unspawned(final: dict) -> None:
    """``nproc``/``world_size`` in a config file or ``--key=value`` start no process: say so rather
    than train on one process while the user believes it is several."""
    if not is_spawned(final) and ((final.get("nproc") or 1) > 1 or (final.get("world_size") or 1) > 1):
        raise ConfigError("nproc/world_size are not config keys: pass them to run_recbole_guided(nproc=..., "
                          "world_size=..., ip=..., port=..., group_offset=...) or on the command line "
                          "(--nproc=2 ...), which start the processes")


def init_rank(final: dict) -> None:
    """Fill ``device``, ``single_spec`` (and quiet the ranks other than 0) the way RecBole's
    ``Config._init_device`` does for a spawned rank, joining the process group if not yet joined."""
    gpu_id = final["gpu_id"]
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
    final["gpu_id"] = gpu_id
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    local_rank = final["local_rank"]
    cuda = len(gpu_id) > 0 and torch.cuda.is_available()
    if cuda and len(gpu_id.split(",")) < final["nproc"]:
        raise ConfigError(f"nproc {final['nproc']} but gpu_id '{gpu_id}' names fewer GPUs: one GPU per process "
                          f"(e.g. --gpu_id=0,1 for --nproc=2)")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", rank=local_rank + final["offset"],
                                world_size=final["world_size"], init_method=f"tcp://{final['ip']}:{final['port']}")
    final["device"] = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    final["single_spec"] = False
    if cuda:
        torch.cuda.set_device(local_rank)
    if local_rank != 0:  # as RecBole: one process per node logs
        final["state"] = "error"
        final["show_progress"] = False
        final["verbose"] = False


def is_main(config) -> bool:
    """The one process that writes files and returns the result: global rank 0 (or the only one)."""
    return config["single_spec"] or config["local_rank"] + config["offset"] == 0


def main_value(config, value):
    """Rank 0's ``value`` on every rank (the others wait for it): one decision, one record."""
    if config["single_spec"]:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(config, value) -> list:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` on one process)."""
    if config["single_spec"]:
        return [value]
    values = [None] * config["world_size"]
    dist.all_gather_object(values, value)
    return values


def share_model(config, model) -> None:
    """Give every rank rank 0's weights (and RecBole's ``other_parameter``): only rank 0 reads a
    checkpoint, so the other ranks (other nodes too) need no copy of the file."""
    if config["single_spec"]:
        return
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)
    model.load_other_parameter(main_value(config, model.other_parameter()))


def wrap_model(config, model):
    """RecBole's DDP wrapping (``AbstractTrainer.__init__``), with ``device_ids`` only for a model on
    a GPU: DDP refuses them for a CPU model, which RecBole never runs."""
    on_gpu = config["device"].type == "cuda"
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[config["local_rank"]] if on_gpu else None)

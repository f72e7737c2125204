"""Training on two processes (gloo, CPU) the way RecBole does it on GPUs: both ranks train on their
own rows with DDP-averaged gradients, rank 0 alone writes, the metrics are the all-reduced ones
and stay in the range of the one-process run on the same data and epochs."""

from __future__ import annotations

import socket

import pytest
import torch
from synthetic import make_dataset, tiny_config

from recbole_guided.errors import ConfigError, GuidedError
from recbole_guided.quick_start import run_recbole_guided

EPOCHS = 2


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run on two processes and on one (own checkpoint folders: the base stage's record
    does not depend on the number of processes and would be reused)."""
    root = tmp_path_factory.mktemp("dist")
    make_dataset(root)
    results = {}
    for nproc in (2, 1):
        config = tiny_config(root, epochs=EPOCHS, base_embedding_file=None, checkpoint_dir=str(root / f"saved{nproc}"))
        results[nproc] = run_recbole_guided("GuidedSASRec", "tiny", config_dict=config, nproc=nproc, port=free_port())
    return root, results


def test_both_ranks_train_on_their_own_rows_with_averaged_gradients(runs):
    _, results = runs
    two, one = results[2]["processes"], results[1]["processes"]
    assert [p["rank"] for p in two] == [0, 1] and all(p["device"] == "cpu" for p in two)
    assert all(p["rows_trained"] > 0 for p in two)
    assert sum(p["rows_trained"] for p in two) == one[0]["rows_trained"]  # the training rows, split in two
    assert two[0]["last_train_loss"] != two[1]["last_train_loss"]  # different rows on each rank...
    assert two[0]["weights_sum"] == pytest.approx(two[1]["weights_sum"], rel=1e-9)  # ...one model (DDP)


def test_rank_zero_writes_each_file_once_and_the_checkpoint_loads_with_weights_only(runs):
    root, results = runs
    saved = root / "saved2"
    assert sorted(p.name.split("-")[0] for p in saved.glob("*.pth")) == ["GuidedSASRec", "SASRec"]
    assert len(list(saved.glob("*.ranks.npz"))) == 2
    assert sorted(p.suffix for p in (saved / "base").iterdir()) == [".json", ".npz"]  # one base stage
    result = results[2]
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)
    assert checkpoint["model"] == "GuidedSASRec" and checkpoint["other_parameter"] == {}
    assert result["ranks_file"] and result["baseline"]["embedding_file"].startswith(str(saved / "base"))


def test_the_metrics_are_all_reduced_over_the_ranks(runs):
    _, results = runs
    result = results[2]
    assert [p["rows_evaluated"] for p in result["processes"]] == [12, 12]  # each rank: half the test users
    whole = result["groups"]["full"]["all"]  # rank 0 ranked every test user on one process
    assert whole["users"] == 24
    for metric, value in result["test_result"].items():
        assert value == pytest.approx(whole[metric], abs=1e-4), metric


def test_metrics_are_in_the_range_of_the_one_process_run(runs):
    _, results = runs
    for model in ("baseline", "guided"):
        two = results[2] if model == "guided" else results[2]["baseline"]
        one = results[1] if model == "guided" else results[1]["baseline"]
        for metric, value in one["test_result"].items():
            assert abs(two["test_result"][metric] - value) <= 0.1, (model, metric, two["test_result"], one["test_result"])
            assert 0 < two["test_result"][metric] <= 1


def test_a_user_error_inside_the_ranks_reads_as_on_one_process(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "tiny" / "tiny.guided").unlink()  # found missing by each rank, after the config checks
    with pytest.raises(GuidedError, match="tiny.guided"):
        run_recbole_guided("GuidedSASRec", "tiny", config_dict=tiny_config(tmp_path), nproc=2, port=free_port())


def test_process_keys_outside_the_run_function_are_refused(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(ConfigError, match="nproc/world_size are not config keys"):
        run_recbole_guided("GuidedSASRec", "tiny", config_dict={**tiny_config(tmp_path), "nproc": 2})
    with pytest.raises(ConfigError, match="nproc 2, world_size 1"):
        run_recbole_guided("GuidedSASRec", "tiny", config_dict=tiny_config(tmp_path), nproc=2, world_size=1)


def test_the_command_line_passes_recboles_process_arguments(monkeypatch, capsys):
    import recbole_guided.quick_start as quick_start
    from recbole_guided.cli import main

    seen = {}
    monkeypatch.setattr(quick_start, "run_recbole_guided", lambda *args, **kwargs: seen.update(kwargs))
    argv = ["--model=GuidedSASRec", "--nproc=2", "--world_size=4", "--ip=10.0.0.1", "--port=29500",
            "--group_offset=2", "--epochs=3"]
    assert main(argv) == 0  # a node other than rank 0's: nothing to report
    assert {k: seen[k] for k in ("nproc", "world_size", "ip", "port", "group_offset")} == {
        "nproc": 2, "world_size": 4, "ip": "10.0.0.1", "port": "29500", "group_offset": 2}
    assert seen["cmd_args"] == ["--epochs=3"]
    assert "ranks 2..3 done" in capsys.readouterr().out

"""docs/own_dataset.md, run as written: its YAML files and every command in its bash blocks, on a
tiny Amazon-style dataset of the page's shape (item field ``asin``, ``|``-separated categories)."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import SHOP_USERS, make_shop_dataset

from recbole_guided.data_files import GuidedTable

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own_dataset.md"
BIN = Path(sys.executable).parent
# The page recommends the 1.5B rater; CI runs the same command with the tiny offline model.
LLM_FOR_TESTS = ("--llm=qwen2.5-1.5b", "--llm=smollm2-135m")


def page_files(text: str) -> dict[str, str]:
    """Each ``name.yaml`` the page introduces, with the YAML block that follows it."""
    return dict(re.findall(r"`(shop\w*\.yaml)`[\s\S]*?```yaml\n([\s\S]*?)```", text))


def page_commands(text: str) -> list[str]:
    return [line for block in re.findall(r"```bash\n([\s\S]*?)```", text) for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_every_command_of_the_own_dataset_page_runs(tmp_path):
    text = PAGE.read_text()
    files, commands = page_files(text), page_commands(text)
    assert set(files) == {"shop.yaml", "shop_schema.yaml"} and len(commands) == 4
    make_shop_dataset(tmp_path)
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for command in commands:
        command = command.replace(*LLM_FOR_TESTS)
        done = subprocess.run(shlex.split(command), cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout + done.stderr)

    guided = GuidedTable.read(tmp_path / "dataset" / "shop" / "shop.guided", key_field="asin")
    assert guided.attributes == ["sportiness", "durability", "style", "value"] and len(guided.tokens) == 24
    assert "sampled: the target against 100 negatives drawn uniformly" in outputs[1]
    assert outputs[1].count("metric              SASRec    GuidedSASRec    change") == 1
    assert "ndcg@10 by group" in outputs[1] and "uni100   tail" in outputs[1]
    record = json.loads((tmp_path / "shop_results.json").read_text())
    assert record["baseline"]["model"] == "SASRec" and set(record["guided"]["test_result"]) == {
        "recall@10", "mrr@10", "ndcg@10"}
    assert "uni100" not in record["evaluation"] and "sampled" in record["evaluation"]
    assert record["evaluation"] in outputs[2]
    assert f"user {SHOP_USERS[0]} (GuidedSASRec)" in outputs[3] and "sportiness" in outputs[3]

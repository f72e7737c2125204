import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_dataset, tiny_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_dataset(root)
    return root


def prepare(model: str, root: Path, config_files=None, **overrides):
    """Config, datasets and a fresh model, the way the run function builds them."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_guided.config import GuidedConfig, get_model

    config = GuidedConfig(model, "tiny" if not config_files else None, config_files, tiny_config(root, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train._dataset)
    return config, dataset, (train, valid, test), model

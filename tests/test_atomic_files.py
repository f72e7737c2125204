"""One reader and writer for atomic files: the dataset's separators and id fields, string tokens."""

import numpy as np
import pytest

from recbole_guided.atomic_files import AtomicFormat, read_atomic, read_header, write_atomic
from recbole_guided.data_files import GuidedTable
from recbole_guided.errors import GuidedFileError

SHOP = AtomicFormat(field_separator=",", seq_separator="|", user_field="customer", item_field="asin")


def test_own_separators_and_tokens_that_look_like_numbers_stay_strings(tmp_path):
    path = tmp_path / "shop.item"
    write_atomic(path, [("asin", "token"), ("categories", "token_seq")], [["007", "Shoes|Running"], ["B01", ""]], SHOP)
    assert path.read_text() == "asin:token,categories:token_seq\n007,Shoes|Running\nB01,\n"
    table = read_atomic(path, SHOP, fields=["asin", "categories"])
    assert table.columns["asin"] == ["007", "B01"] and table.sequences("categories", SHOP) == [["Shoes", "Running"], []]
    assert read_header(path, SHOP) == {"asin": "token", "categories": "token_seq"}


def test_guided_table_keyed_by_the_datasets_item_field_round_trips(tmp_path):
    path = tmp_path / "shop.guided"
    GuidedTable("asin", ["007", "B01"], ["style", "value"], np.array([[1.5, 2.0], [3.0, 4.25]])).write(path, SHOP)
    table = GuidedTable.read(path, key_field="asin", fmt=SHOP)
    assert table.tokens == ["007", "B01"] and table.values.tolist() == [[1.5, 2.0], [3.0, 4.25]]
    with pytest.raises(GuidedFileError, match=r"first header cell is 'asin:token', expected 'item_id:token'"):
        GuidedTable.read(path, key_field="item_id", fmt=SHOP)


@pytest.mark.parametrize("content,message", [
    ("asin:token,title:token_seq\nB01,Shoe,extra\n", r"line 2: 3 cells, expected 2 \(asin, title\) split by ','"),
    ("asin:token,title:text\nB01,Shoe\n", r"line 1: header cell 'title:text' should be 'name:type'"),
    ("asin:token,asin:token\n", r"line 1: field 'asin' appears twice"),
    ("", r"empty file, expected a header line"),
])
def test_malformed_files_name_the_file_the_line_and_what_was_expected(tmp_path, content, message):
    path = tmp_path / "bad.item"
    path.write_text(content)
    with pytest.raises(GuidedFileError, match=message) as err:
        read_atomic(path, SHOP)
    assert str(path) in str(err.value)


def test_a_missing_field_lists_the_fields_the_file_has(tmp_path):
    path = tmp_path / "shop.item"
    path.write_text("asin:token,title:token_seq\nB01,Shoe\n")
    with pytest.raises(GuidedFileError, match=r"no field 'brand' \(item file\); the file has \['asin', 'title'\]"):
        read_atomic(path, SHOP, what="item file", fields=["asin", "brand"])

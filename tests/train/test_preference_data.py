"""Reading and validating SFT / preference rows: layouts, chat templates, error records, truncation."""

import pytest
from transformers import AutoTokenizer

from rayflow.train.preference_data import DataConfig, RowError, load_splits, parse_row, split_eval
from tests.train.conftest import BAD_ROWS, synthetic_rows, write_jsonl


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_layouts():
    assert parse_row({"prompt": "Q", "chosen": "A", "rejected": "B"}, "preference") == ("Q", "A", "B")
    user = {"role": "user", "content": "Q"}
    uf = {
        "prompt": "Q",
        "chosen": [user, {"role": "assistant", "content": "A"}],
        "rejected": [user, {"role": "assistant", "content": "B"}],
    }
    assert parse_row(uf, "preference") == ([user], "A", "B")
    trl = {"prompt": [user], "chosen": [{"role": "assistant", "content": "A"}], "rejected": "B"}
    assert parse_row(trl, "preference") == ([user], "A", "B")
    assert parse_row({"prompt": "Q", "response": "A"}, "response") == ("Q", "A", None)
    assert parse_row({"prompt": "Q", "chosen": "A", "rejected": "B"}, "response") == ("Q", "A", None)


@pytest.mark.parametrize(
    "row,reason",
    [
        ({"prompt": "Q", "chosen": "A"}, "missing field 'rejected'"),
        ({"chosen": "A", "rejected": "B"}, "missing field 'prompt'"),
        ({"prompt": "Q", "chosen": " ", "rejected": "B"}, "'chosen': empty response"),
        ({"prompt": "Q", "chosen": 3, "rejected": "B"}, "'chosen' must be a string"),
        (
            {"prompt": "Q", "chosen": [{"role": "user", "content": "x"}], "rejected": "B"},
            "must be the assistant's",
        ),
    ],
)
def test_bad_rows_name_the_field(row, reason):
    with pytest.raises(RowError, match=reason):
        parse_row(row, "preference")


def test_every_row_is_kept_or_recorded(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", synthetic_rows(20), BAD_ROWS)
    cfg = DataConfig(train=str(path), eval_fraction=0.25, max_length=128, max_prompt_length=64)
    train, held, errors, stats = load_splits(cfg, "preference", tok)
    assert len(train) + len(held) == 20 and len(errors) == 4 and stats["rows_read"] == 24
    reasons = {e["row"]: e["reason"] for e in errors}
    assert reasons[21].startswith("invalid JSON") and "rejected" in reasons[22]
    assert "empty response" in reasons[23] and "over max_prompt_length 64" in reasons[24]
    assert all(e["source"] == str(path) for e in errors)
    # chat rows get the template; every response ends with EOS
    chat = next(e for e in train + held if isinstance(e.prompt, list))
    assert tok.decode(chat.prompt_ids).startswith("<|im_start|>user\n")
    assert all(e.chosen_ids[-1] == tok.eos_token_id for e in train)
    # the split is a pure function of the ids
    again = split_eval(train + held, 0.25)
    assert {e.id for e in again[1]} == {e.id for e in held}


def test_overlong_response_is_rejected_or_truncated_and_counted(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q", "chosen": "long " * 50, "rejected": "B"}])
    strict = DataConfig(train=str(path), eval_fraction=0, max_length=20)
    with pytest.raises(ValueError, match="no usable training rows"):
        load_splits(strict, "preference", tok)
    train, _, _, stats = load_splits(
        strict.model_copy(update={"truncate_responses": True}), "preference", tok
    )
    assert stats["truncated_responses"] == 1 and train[0].truncated
    assert len(train[0].prompt_ids) + len(train[0].chosen_ids) == 20


def test_parquet_input(tmp_path, tok):
    import pandas as pd

    pd.DataFrame([{"prompt": "Q", "response": "A"}, {"prompt": "Q2", "response": ""}]).to_parquet(
        tmp_path / "x.parquet"
    )
    train, _, errors, _ = load_splits(DataConfig(train=str(tmp_path), eval_fraction=0), "response", tok)
    assert len(train) == 1 and errors[0]["row"] == 2 and "empty" in errors[0]["reason"]


def test_missing_input_is_named(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_splits(DataConfig(train=str(tmp_path / "nowhere")), "preference", tok)

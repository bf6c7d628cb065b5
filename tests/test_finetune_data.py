"""Fine-tuning data: both task kinds, bad rows with line numbers, chat templates, masks, truncation."""

import json

import pytest

from finetune.data import IGNORE, encode_classification, encode_generation, load_dataset, preview
from studio.errors import StudioError


@pytest.fixture(scope="module")
def smol_tokenizer():
    from studio.backends.hf import load_model_and_tokenizer
    from studio.registry import resolve_model

    return load_model_and_tokenizer(resolve_model("smollm2-135m-instruct"))[1]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from studio.registry import resolve_model

    return AutoTokenizer.from_pretrained(str(resolve_model("minilm-l6-v2").path))


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_instruction_and_chat_rows_with_bad_lines_reported(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "Capital of France?", "output": "Paris"},
        "{not json",
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"instruction": "Empty answer", "output": ""},
        {"messages": [{"role": "user", "content": "No reply"}]},
        {"instruction": "Sum", "input": "2 + 3", "output": "5"},
    ])
    ds = load_dataset(f)
    assert ds.task == "generation" and len(ds.rows) == 3
    assert [n for n, _ in ds.bad] == [2, 4, 5]
    assert "not JSON" in ds.bad[0][1] and "no output" in ds.bad[1][1] and "assistant" in ds.bad[2][1]
    assert ds.rows[2]["messages"][0]["content"] == "Sum\n\n2 + 3"
    train, val = ds.split(0.34, seed=0)
    assert len(train) + len(val) == 3 and len(val) == 1
    assert ds.split(0.34, seed=0) == (train, val)


def test_generation_masks_the_prompt_and_counts_truncation(tmp_path, smol_tokenizer):
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "Capital of France?", "output": "Paris"},
        {"instruction": "Write a long answer.", "output": "word " * 300}]))
    enc = encode_generation(ds.rows, smol_tokenizer, max_length=64)
    assert enc.truncated == 1 and len(enc.input_ids[1]) == 64
    ids, lab = enc.input_ids[0], enc.labels[0]
    learned = smol_tokenizer.decode([t for t in lab if t != IGNORE])
    assert learned.strip().startswith("Paris") and "France" not in learned  # only the reply is learned
    assert lab[0] == IGNORE and len(ids) == len(lab)
    shown = preview(enc, smol_tokenizer, 1)[0]
    assert "Capital of France?" in shown["text"] and shown["tokens"] == len(ids)


def test_classification_csv_and_jsonl(tmp_path, minilm_tokenizer):
    f = tmp_path / "c.csv"
    f.write_text("text,label\ngreat film,positive\nawful plot,negative\n,positive\nfine acting,\n"
                 "loved it,positive\n")
    ds = load_dataset(f)
    assert ds.task == "classification" and ds.labels == ["negative", "positive"]
    assert [n for n, _ in ds.bad] == [4, 5] and len(ds.rows) == 3
    enc = encode_classification(ds.rows, minilm_tokenizer, ds.labels, max_length=4)
    assert enc.labels == [1, 0, 1] and all(len(i) <= 4 for i in enc.input_ids)
    j = write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    assert load_dataset(j).labels == ["0", "1"]


def test_unusable_files_say_what_to_fix(tmp_path):
    with pytest.raises(StudioError, match="not found"):
        load_dataset(tmp_path / "none.jsonl")
    bad = tmp_path / "b.csv"
    bad.write_text("sentence,sentiment\nx,y\n")
    with pytest.raises(StudioError, match="text and label columns"):
        load_dataset(bad)
    empty = write_jsonl(tmp_path / "e.jsonl", ["{oops", {"foo": 1}])
    with pytest.raises(StudioError, match="no usable generation rows; first problem, line 1"):
        load_dataset(empty)
    one = write_jsonl(tmp_path / "o.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    with pytest.raises(StudioError, match="at least two labels"):
        load_dataset(one)


@pytest.mark.filterwarnings("error")  # zero_division is explicit: no UndefinedMetricWarning
@pytest.mark.parametrize("preds, y, n_labels, expected", [
    # class 0: F1 2/3; class 1: TP 2, FP 2 -> 2/3; class 2 never predicted: 0; class 3 in neither: 0
    ([0, 1, 1, 1, 1], [0, 0, 1, 1, 2], 4, {"accuracy": 0.6, "f1": 0.3333}),
    ([0, 1, 0, 1], [0, 1, 0, 1], 2, {"accuracy": 1.0, "f1": 1.0}),
    ([1, 1, 1], [0, 0, 0], 2, {"accuracy": 0.0, "f1": 0.0}),
    ([0, 2, 1], [0, 1, 2], 3, {"accuracy": 0.3333, "f1": 0.3333}),
], ids=["unpredicted-and-absent-class", "perfect", "all-wrong", "swapped"])
def test_classification_metrics_match_hand_computed_macro_f1(preds, y, n_labels, expected):
    from finetune.train import classification_metrics

    assert classification_metrics(preds, y, n_labels) == expected

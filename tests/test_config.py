from pathlib import Path

import pytest

from studio.config import (
    GenerationConfig,
    StudioConfig,
    config_class_for,
    load_config,
    parse_overrides,
    save_config,
)
from studio.errors import StudioError

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((ROOT / "configs").rglob("*.yaml"))


def test_configs_folder_is_not_empty():
    assert ROOT / "configs" / "studio.yaml" in CONFIG_FILES


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_config_file_loads_into_its_dataclass(path):
    cls = config_class_for(path, ROOT / "configs")
    cfg = load_config(cls, path)
    assert isinstance(cfg, cls)


def test_studio_yaml_documents_the_defaults():
    # configs/studio.yaml is what users copy: it must say exactly what the code defaults to
    assert load_config(StudioConfig, ROOT / "configs" / "studio.yaml") == StudioConfig()


def test_overrides_are_typed_and_nested():
    cfg = load_config(StudioConfig, ROOT / "configs" / "studio.yaml",
                      ["generation.temperature=0", "server.port=9000", "generation.stop=</s>",
                       "chat.base_url=http://127.0.0.1:8000/v1"])
    assert cfg.generation.temperature == 0.0 and isinstance(cfg.generation.temperature, float)
    assert cfg.server.port == 9000
    assert cfg.generation.stop == ["</s>"]
    assert cfg.chat.base_url == "http://127.0.0.1:8000/v1"
    assert cfg.chat.model == "smollm2-135m-instruct"  # untouched keys keep the file's values


def test_unknown_key_in_file_names_it_and_the_known_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("generation:\n  temprature: 0.3\n")
    with pytest.raises(StudioError) as err:
        load_config(StudioConfig, f)
    msg = str(err.value)
    assert "generation.temprature" in msg and "generation.temperature" in msg


def test_unknown_key_in_override():
    with pytest.raises(StudioError, match="unknown key 'colour'"):
        load_config(GenerationConfig, None, ["colour=red"])


def test_malformed_yaml_says_where(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("chat:\n  backend: [llamacpp\n")
    with pytest.raises(StudioError, match=r"not valid YAML at line \d+"):
        load_config(StudioConfig, f)


@pytest.mark.parametrize("override, expected", [
    ("server.port=high", "whole number"),
    ("generation.temperature=hot", "a number"),
    ("server.share=maybe", "true or false"),
])
def test_wrong_types_are_refused(override, expected):
    with pytest.raises(StudioError, match=expected):
        load_config(StudioConfig, None, [override])


def test_a_redraw_rate_that_would_stall_or_flood_the_page_is_refused():
    for bad in ("0", "-1", "5000"):
        with pytest.raises(StudioError, match="server.redraws_per_second must be above 0 and at most 1000"):
            load_config(StudioConfig, None, [f"server.redraws_per_second={bad}"])
    assert load_config(StudioConfig, None, ["server.redraws_per_second=1000"]).server.redraws_per_second == 1000


def test_override_needs_an_equals_sign():
    with pytest.raises(StudioError, match="key=value"):
        parse_overrides(["temperature"])


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(StudioConfig, None, ["generation.seed=7", "generation.stop=[a, b]"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(StudioConfig, path) == cfg


def test_fine_tuning_says_steps_like_the_generators_and_still_reads_max_steps(tmp_path):
    from finetune.config import FinetuneConfig
    from generative.train import GenConfig

    assert "steps" in {f for f in GenConfig.__dataclass_fields__} & {f for f in FinetuneConfig.__dataclass_fields__}
    with pytest.warns(DeprecationWarning, match="now steps"):
        old = load_config(FinetuneConfig, None, ["data=x.jsonl", "max_steps=30"])
    assert old.steps == 30 and old.max_steps is None
    saved = save_config(old, tmp_path / "config.yaml").read_text()
    assert "steps: 30" in saved and "max_steps" not in saved
    assert load_config(FinetuneConfig, tmp_path / "config.yaml") == old

"""`studio` as a user types it: the contract's JSON, one-line errors, a fast --help."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port, run_studio

QUESTION = "What is the capital of France? Answer in one word."


def test_chat_json_matches_the_contract_and_answers_paris():
    result = run_studio("chat", QUESTION, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # stdout holds one JSON document and nothing else
    assert {"text", "model", "backend", "completion_tokens", "seconds"} <= set(data)
    assert "Paris" in data["text"]
    assert (data["model"], data["backend"]) == ("smollm2-135m-instruct", "llamacpp")
    assert data["completion_tokens"] > 0 and data["seconds"] > 0


def test_chat_json_through_hf_backend():
    result = run_studio("chat", QUESTION, "--json", "--backend", "hf", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["backend"] == "hf" and "Paris" in data["text"]


def test_chat_json_through_openai_backend(llama_server):
    result = run_studio("chat", QUESTION, "--json", "--backend", "openai", "--base-url", llama_server)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["backend"] == "openai" and "Paris" in data["text"]


def test_chat_streams_plain_text_without_json():
    result = run_studio("chat", QUESTION, "--temperature", "0")
    assert result.returncode == 0
    assert "Paris" in result.stdout and not result.stdout.lstrip().startswith("{")


def test_same_seed_same_reply_from_the_cli():
    args = ("chat", "Write one sentence about rain.", "--json", "--temperature", "1.0", "--seed", "5")
    first, second = (json.loads(run_studio(*args).stdout)["text"] for _ in range(2))
    assert first == second


def test_chat_json_schema_from_a_file(tmp_path):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"capital": {"type": "string"}},
                                  "required": ["capital"]}))
    result = run_studio("chat", QUESTION, "--json", "--json-schema", str(schema))
    assert "capital" in json.loads(json.loads(result.stdout)["text"])


def bad_yaml(tmp):
    path = tmp / "bad.yaml"
    path.write_text("chat: [llamacpp\n")
    return ["--config", str(path)]


def unknown_key(tmp):
    path = tmp / "typo.yaml"
    path.write_text("generation:\n  temprature: 0.1\n")
    return ["--config", str(path)]


BAD_INPUT = [
    ("unknown model", lambda t: ["--model", "llama-9000"], "unknown model 'llama-9000'; known names"),
    ("missing file", lambda t: ["--model", "/no/such/model.gguf"], "does not exist"),
    ("malformed YAML", bad_yaml, "is not valid YAML at line"),
    ("unknown config key", unknown_key, "unknown key 'generation.temprature'"),
    ("unreachable base URL",
     lambda t: ["--backend", "openai", "--base-url", f"http://127.0.0.1:{free_port()}/v1"],
     "cannot reach"),
    ("bad override", lambda t: ["--set", "server.port=abc"], "must be a whole number"),
]


@pytest.mark.parametrize("case, extra, expected", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, case, extra, expected):
    args = extra(tmp_path)
    global_opts = [a for a in args if a in ("--config", "--set")]
    if global_opts:  # --config / --set come before the command
        result = run_studio(*args, "chat", QUESTION)
    else:
        result = run_studio("chat", QUESTION, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("studio: error:"), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_help_lists_commands_without_loading_heavy_libraries():
    code = (
        "import sys\n"
        "from studio.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'gradio', 'llama_cpp', 'langchain_core',"
        " 'chromadb') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout
    assert "serve" in out and "chat" in out
    assert "HEAVY []" in out


def test_models_lists_the_bundled_models():
    data = json.loads(run_studio("models", "--json").stdout)
    names = {row["name"]: row for row in data}
    assert names["smollm2-135m-instruct"]["path"].endswith(".gguf")
    assert names["minilm-l6-v2"]["format"] == "hf"

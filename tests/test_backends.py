"""The three chat backends on the bundled SmolLM2-135M model: answers, settings, safety."""

import json
import threading
import time

import pytest

from studio.backends import GenerationSettings, load_backend
from studio.backends.llamacpp import TakeTurns
from studio.errors import StudioError

CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY = GenerationSettings(temperature=0, max_tokens=24)


def test_llamacpp_answers_paris_and_streams_in_pieces(llamacpp):
    stream = llamacpp.stream(CAPITAL, GREEDY)
    pieces = list(stream)
    assert "Paris" in stream.text
    assert len(pieces) >= 2 and "".join(pieces) == stream.text
    assert stream.completion_tokens == len(pieces)
    assert 0 < stream.first_token_seconds <= stream.seconds


def test_llamacpp_same_seed_same_text_other_seeds_vary(llamacpp):
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]

    def run(seed):
        return llamacpp.complete(msgs, GenerationSettings(temperature=1.0, max_tokens=30, seed=seed)).text

    assert run(7) == run(7)
    assert len({run(s) for s in (1, 2, 3)}) >= 2


def test_llamacpp_max_tokens_and_stop(llamacpp):
    full = llamacpp.complete(CAPITAL, GenerationSettings(temperature=0, max_tokens=60)).text
    assert llamacpp.complete(CAPITAL, GenerationSettings(temperature=0, max_tokens=3)).completion_tokens <= 3
    word = full.split()[1] if len(full.split()) > 1 else full[1:]
    cut = llamacpp.complete(CAPITAL, GenerationSettings(temperature=0, max_tokens=60, stop=[word])).text
    assert word not in cut and full.startswith(cut)


def test_llamacpp_json_schema_constrains_output(llamacpp):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"]}
    settings = GenerationSettings(temperature=0, max_tokens=60, json_schema=schema)
    msgs = [{"role": "user", "content": "Name the capital of France as JSON with city and country."}]
    data = json.loads(llamacpp.complete(msgs, settings).text)
    assert set(data) == {"city", "country"} and all(isinstance(v, str) for v in data.values())


def test_llamacpp_serves_two_concurrent_chats_correctly(llamacpp):
    prompts = [CAPITAL, [{"role": "user", "content": "What is 2 + 2? Answer with a number."}]]
    expected = [llamacpp.complete(p, GREEDY).text for p in prompts]
    got: dict[int, str] = {}
    barrier = threading.Barrier(2)

    def chat(i):
        barrier.wait()
        got[i] = "".join(llamacpp.stream(prompts[i], GREEDY))

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [got[0], got[1]] == expected


def test_llamacpp_contexts_take_turns_token_by_token():
    # with parallel contexts, a request that comes while another streams starts within a few tokens,
    # not after the whole first answer, and both texts are what each gives alone
    backend = load_backend("llamacpp", "smollm2-135m-instruct", parallel=2, n_ctx=1024)
    try:
        story = [{"role": "user", "content": "Tell me a long story about a cat."}]
        long = GenerationSettings(max_tokens=96, temperature=0.0, seed=1)
        alone = [backend.complete(story, long), backend.complete(CAPITAL, GREEDY)]
        first = backend.stream(story, long)
        it = iter(first)
        next(it)  # the long answer is streaming
        start = time.perf_counter()
        second = "".join(backend.stream(CAPITAL, GREEDY))
        waited = time.perf_counter() - start
        rest = "".join(it)
        assert alone[0].completion_tokens > 60
        assert waited < 0.6 * alone[0].seconds, (waited, alone[0].seconds)
        assert [first.text, second] == [alone[0].text, alone[1].text] and rest
    finally:
        backend.close()


def test_take_turns_hands_the_lock_over_first_come_first_served():
    turns, order, ready = TakeTurns(), [], threading.Barrier(4)

    def worker(name: str) -> None:
        ready.wait()
        for _ in range(3):
            with turns:
                order.append(name)
                time.sleep(0.01)

    with turns:  # held while the three line up, so each waits its turn from the start
        threads = [threading.Thread(target=worker, args=(n,)) for n in "abc"]
        for t in threads:
            t.start()
        ready.wait()
        time.sleep(0.2)
    for t in threads:
        t.join(timeout=10)
    assert sorted(order) == sorted("abc" * 3)
    # nobody takes two turns while another waits: each round has all three
    assert all(sorted(order[i:i + 3]) == list("abc") for i in (0, 3, 6)), order


def test_llamacpp_stopping_early_frees_the_model(llamacpp):
    stream = llamacpp.stream([{"role": "user", "content": "Tell me a long story."}],
                             GenerationSettings(max_tokens=200))
    it = iter(stream)
    next(it), next(it)
    stream.close()
    # the context went back to the pool: the next request is answered, not blocked
    assert "Paris" in llamacpp.complete(CAPITAL, GREEDY).text


def test_llamacpp_generates_ahead_of_a_slow_reader(llamacpp):
    # a web page reads the reply only between redraws: the model must not sit idle meanwhile
    story = [{"role": "user", "content": "Tell me a long story about a cat."}]
    settings = GenerationSettings(max_tokens=64, temperature=0.0, seed=1)
    whole = llamacpp.complete(story, settings)
    stream = llamacpp.stream(story, settings)
    it = iter(stream)
    first = next(it)
    time.sleep(whole.seconds + 1.0)  # the reader is busy for longer than the whole generation takes
    start = time.perf_counter()
    rest = "".join(it)
    drained = time.perf_counter() - start
    assert first + rest == whole.text and stream.completion_tokens == whole.completion_tokens
    assert whole.completion_tokens > 20
    # everything was generated while the reader slept: the rest arrives at once, not at model speed
    assert drained < 0.4 * whole.seconds, (drained, whole.seconds)  # pulled by the reader: about 0.6


def test_bad_settings_and_messages_are_explained():
    with pytest.raises(StudioError, match="temperature"):
        GenerationSettings(temperature=-1)
    with pytest.raises(StudioError, match="top_p"):
        GenerationSettings(top_p=0)


def test_empty_or_malformed_messages_are_refused(llamacpp):
    with pytest.raises(StudioError, match="at least one user message"):
        llamacpp.stream([], GREEDY)
    with pytest.raises(StudioError, match="role"):
        llamacpp.stream([{"role": "robot", "content": "hi"}], GREEDY)


def test_unknown_backend_lists_choices():
    with pytest.raises(StudioError, match="llamacpp, hf, openai"):
        load_backend("vllm")


def test_llamacpp_refuses_an_hf_folder():
    with pytest.raises(StudioError, match="--backend hf"):
        load_backend("llamacpp", "minilm-l6-v2")


# --- transformers -------------------------------------------------------------------------

def test_hf_backend_loads_the_gguf_and_answers_paris(hf_backend, studio_home):
    stream = hf_backend.stream(CAPITAL, GREEDY)
    pieces = list(stream)
    assert "Paris" in stream.text and len(pieces) >= 2
    assert 0 < stream.completion_tokens <= GREEDY.max_tokens
    # the dequantized model was cached under STUDIO_HOME, so the next load skips conversion
    cached = list((studio_home / "cache" / "hf").glob("smollm2-135m-instruct-*/model.safetensors"))
    assert len(cached) == 1


def test_hf_backend_seed_and_stop(hf_backend):
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]
    settings = GenerationSettings(temperature=1.0, max_tokens=20, seed=11)
    assert hf_backend.complete(msgs, settings).text == hf_backend.complete(msgs, settings).text
    full = hf_backend.complete(CAPITAL, GREEDY).text
    word = full.split()[-1]
    cut = hf_backend.complete(CAPITAL, GenerationSettings(temperature=0, max_tokens=24, stop=[word])).text
    assert word not in cut and full.startswith(cut)


def test_hf_backend_refuses_json_schema_with_a_way_out(hf_backend):
    with pytest.raises(StudioError, match="--backend llamacpp"):
        hf_backend.stream(CAPITAL, GenerationSettings(json_schema={"type": "object"}))


def test_hf_backend_reloads_from_the_cache(hf_backend):
    again = load_backend("hf", "smollm2-135m-instruct")
    assert "Paris" in again.complete(CAPITAL, GREEDY).text


# --- OpenAI-compatible endpoint --------------------------------------------------------------

def test_openai_backend_against_a_real_llama_cpp_server(llama_server, llamacpp):
    backend = load_backend("openai", base_url=llama_server)
    assert backend.model_name  # taken from the server's /models
    stream = backend.stream(CAPITAL, GREEDY)
    pieces = list(stream)
    assert "Paris" in stream.text and len(pieces) >= 2
    # the server runs the same model with the same greedy settings as the library
    assert stream.text == llamacpp.complete(CAPITAL, GREEDY).text


def test_openai_backend_json_schema(llama_server):
    backend = load_backend("openai", base_url=llama_server)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    text = backend.complete(CAPITAL, GenerationSettings(temperature=0, max_tokens=40, json_schema=schema)).text
    assert isinstance(json.loads(text)["answer"], str)


def test_openai_backend_unreachable_url_says_so():
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(StudioError, match="cannot reach .* is the server running"):
        load_backend("openai", base_url=url)


def test_openai_backend_needs_a_url():
    with pytest.raises(StudioError, match="--base-url"):
        load_backend("openai")

"""The three chat backends on the bundled SmolLM2-135M model: answers, settings, safety."""

import json
import threading
import time

import pytest

from studio.backends import GenerationSettings, load_backend
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


def same_start(a: str, b: str, words: int = 6) -> bool:
    """Decoded beside another request, a greedy answer can differ from its alone-run in a late token
    (other matrix kernels for a batch of several rows: see studio/backends/batching.py); its start
    is the same and it is the answer to its own prompt, not to the other one."""
    return a.split()[:words] == b.split()[:words]


def test_llamacpp_serves_two_concurrent_chats_correctly(llamacpp):
    # parallel=1: the second waits for the first, and each gets exactly its alone-run's text
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


def test_llamacpp_decodes_parallel_requests_together():
    # with parallel slots, a request that comes while another streams is answered at once, beside it:
    # it finishes while the long one is still generating, and neither answer is mixed with the other
    backend = load_backend("llamacpp", "smollm2-135m-instruct", parallel=2, n_ctx=1024)
    try:
        story = [{"role": "user", "content": "Tell me a long story about a cat."}]
        long = GenerationSettings(max_tokens=96, temperature=0.0, seed=1)
        alone = [backend.complete(story, long), backend.complete(CAPITAL, GREEDY)]
        first, arrivals, started = backend.stream(story, long), [], threading.Event()

        def read_first():
            for _ in first:
                arrivals.append(time.perf_counter())
                started.set()

        reader = threading.Thread(target=read_first)
        reader.start()
        assert started.wait(60)  # the long answer is streaming
        start = time.perf_counter()
        second = "".join(backend.stream(CAPITAL, GREEDY))
        ended = time.perf_counter()
        reader.join(timeout=120)
        assert alone[0].completion_tokens > 60
        assert ended - start < 0.6 * alone[0].seconds, (ended - start, alone[0].seconds)
        # the long answer went on streaming after the short one had ended: they were decoded together,
        # the short one did not jump the queue and keep the other waiting
        assert sum(t > ended for t in arrivals) >= 5, (len(arrivals), sum(t > ended for t in arrivals))
        assert sum(t < start for t in arrivals) >= 1
        assert "Paris" in second and "cat" in first.text.lower()
        assert same_start(first.text, alone[0].text) and same_start(second, alone[1].text)
    finally:
        backend.close()


def test_llamacpp_eight_requests_at_once_each_get_their_own_answer():
    backend = load_backend("llamacpp", "smollm2-135m-instruct", parallel=8, n_ctx=512)
    try:
        facts = {f"What is the capital of {country}? Answer in one word.": city for country, city in
                 (("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Spain", "Madrid"))}
        asks = [q for q in facts for _ in range(2)]
        settings = GenerationSettings(temperature=0, max_tokens=24)
        got: dict[int, str] = {}
        barrier = threading.Barrier(len(asks))

        def chat(i):
            barrier.wait()
            got[i] = backend.complete([{"role": "user", "content": asks[i]}], settings).text

        threads = [threading.Thread(target=chat, args=(i,)) for i in range(len(asks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(got) == len(asks)
        for i, q in enumerate(asks):
            assert facts[q] in got[i], (q, got[i])
            assert not any(other in got[i] for other in facts.values() if other != facts[q]), (q, got[i])
    finally:
        backend.close()


def test_llamacpp_hands_out_the_lowest_free_slot():
    # llama.cpp splits a batch where sequence ids stop increasing (8 rows in reverse order: 94-104 ms a
    # step against 62-69 in order), so slots freed out of order are reused lowest first
    from studio.backends.batching import END

    backend = load_backend("llamacpp", "smollm2-135m-instruct", parallel=3, n_ctx=1536)
    decoder, story = backend._decoder, [{"role": "user", "content": "Tell me a long story about a cat."}]

    def ask():
        req = decoder.submit(story, temperature=0.8, top_p=0.95, top_k=40, max_tokens=400, seed=1)
        assert req.out.get(timeout=60) is not END  # streaming: it holds a slot
        return req

    def end(req):
        req.cancel()
        while req.out.get(timeout=60) is not END:
            pass

    try:
        reqs = [ask() for _ in range(3)]
        assert sorted(r.seq for r in reqs) == [0, 1, 2]
        by_seq = {r.seq: r for r in reqs}
        end(by_seq[2])
        end(by_seq[0])
        again = [ask(), ask()]
        assert [r.seq for r in again] == [0, 2]
        for r in again + [by_seq[1]]:
            end(r)
        assert sorted(decoder._free) == [0, 1, 2]  # every slot is free again
    finally:
        backend.close()


def test_llamacpp_refuses_a_conversation_longer_than_its_context():
    backend = load_backend("llamacpp", "smollm2-135m-instruct", n_ctx=256)
    try:
        with pytest.raises(StudioError, match="tokens long.*context holds"):
            backend.complete([{"role": "user", "content": "word " * 400}], GREEDY)
        assert "Paris" in backend.complete(CAPITAL, GREEDY).text  # and it still answers after
    finally:
        backend.close()


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


def test_an_unloaded_llamacpp_model_is_let_go_by_the_decoding_thread():
    # the backend cache drops a model it unloads and counts on that to free it: the decoding thread (one for
    # every model of the process) must not keep the model and its cache alive
    import gc
    import weakref

    backend = load_backend("llamacpp", "smollm2-135m-instruct", parallel=2, n_ctx=256)
    assert "Paris" in backend.complete(CAPITAL, GREEDY).text
    assert sum(t.name == "llamacpp-batch" and t.is_alive() for t in threading.enumerate()) == 1
    decoder, llama = weakref.ref(backend._decoder), weakref.ref(backend._llama)
    del backend
    gc.collect()
    deadline = time.monotonic() + 10
    while (decoder() is not None or llama() is not None) and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
    assert decoder() is None and llama() is None


def test_two_loaded_llamacpp_models_each_decode_at_full_speed():
    # a thread per model gave ggml two OpenMP teams on two cores: once both had decoded, each ran at a third
    # of its speed (30-41 against 99-107 tokens/s here); one decoding thread for all keeps them at 93-101
    story = [{"role": "user", "content": "Tell me a long story about a cat."}]
    settings = GenerationSettings(temperature=0, max_tokens=80)

    def speed(backend) -> float:
        s = backend.stream(story, settings).consume()
        return (s.completion_tokens - 1) / (s.seconds - s.first_token_seconds)

    first = load_backend("llamacpp", "smollm2-135m-instruct", n_ctx=512)
    second = load_backend("llamacpp", "smollm2-135m-instruct", n_ctx=256)
    try:
        speed(first)
        alone = max(speed(first), speed(first))
        speed(second)  # the second model decodes too
        together = [speed(first), speed(second), speed(first), speed(second)]
    finally:
        first.close()
        second.close()
    assert sorted(together)[1] >= 0.7 * alone, (alone, together)  # (one slow sample on a busy runner may pass)


@pytest.fixture()
def two_models():
    """Two small llama.cpp backends of the bundled model, loaded together (closed after the test)."""
    pair = [load_backend("llamacpp", "smollm2-135m-instruct", n_ctx=512 - 256 * i) for i in range(2)]
    yield pair
    for backend in pair:
        backend.close()


def test_an_unload_mid_answer_ends_that_answer_with_a_reason_and_others_go_on(two_models):
    from studio.backends.batching import END

    first, second = two_models
    story = [{"role": "user", "content": "Tell me a long story about a cat."}]
    req = first._decoder.submit(story, temperature=0.8, top_p=0.95, top_k=40, max_tokens=400, seed=1)
    assert req.out.get(timeout=60) is not END  # it is streaming
    first.close()
    pieces = []
    while (piece := req.out.get(timeout=30)) is not END:
        pieces.append(piece)
    assert isinstance(pieces[-1], StudioError) and "unloaded while answering" in str(pieces[-1])
    assert "Paris" in second.complete(CAPITAL, GREEDY).text


def test_a_failing_model_ends_its_own_requests_and_the_other_model_keeps_answering(two_models, monkeypatch):
    failing, other = two_models

    def broken_step():
        raise RuntimeError("simulated llama.cpp failure")

    monkeypatch.setattr(failing._decoder, "_step", broken_step)
    with pytest.raises(StudioError, match="failed while answering"):
        failing.complete(CAPITAL, GREEDY)
    assert failing.broken  # the backend cache loads it afresh next time
    with pytest.raises(StudioError, match="being unloaded"):  # nothing decodes on it again
        failing.complete(CAPITAL, GREEDY)
    assert "Paris" in other.complete(CAPITAL, GREEDY).text and not other.broken


def test_the_backend_cache_reloads_a_model_that_failed(monkeypatch):
    from studio.backends import BackendCache

    cache = BackendCache()
    first = cache.get("llamacpp", "smollm2-135m-instruct")

    def broken_step():
        raise RuntimeError("simulated llama.cpp failure")

    monkeypatch.setattr(first._decoder, "_step", broken_step)
    with pytest.raises(StudioError, match="failed while answering"):
        first.complete(CAPITAL, GREEDY)
    again = cache.get("llamacpp", "smollm2-135m-instruct")
    assert again is not first and "Paris" in again.complete(CAPITAL, GREEDY).text
    again.close()


def test_a_model_dropped_on_the_decoding_thread_is_closed_from_another_thread(two_models, monkeypatch):
    # the garbage collector can drop a backend on the decoding thread, even inside a step of its own context:
    # closing it there would free the context under that step (or wait on itself)
    from studio.backends.batching import on_decoding_thread

    serving, dropped = two_models
    real_step, seen = serving._decoder._step, []

    def step_that_drops():
        if not seen:
            seen.append(on_decoding_thread())
            dropped.close()  # as __del__ would, here
        real_step()

    monkeypatch.setattr(serving._decoder, "_step", step_that_drops)
    assert "Paris" in serving.complete(CAPITAL, GREEDY).text  # the step went on
    assert seen == [True]
    deadline = time.monotonic() + 10
    while dropped._decoder is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dropped._decoder is None  # closed, by a thread of its own

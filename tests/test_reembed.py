"""A collection keeps the embedding model its vectors came from: searched and extended with it, moved to
another model only by re-embedding all of it (never a mix), safely when a run fails or is killed; the
embedding role sets the model of new collections. The second model is a real one made here: all-MiniLM-L6-v2
cut to its first two layers (other vectors, same width), imported as an installed model."""

from __future__ import annotations

import json
import os
import subprocess

import gradio as gr
import numpy as np
import pytest

from ingest import pipeline
from ingest.config import IngestConfig
from ingest.pipeline import Ingestor
from ingest.store import TMP
from studio import audit, modelstore
from studio.accounts import Accounts
from studio.config import StudioConfig
from studio.errors import StudioError
from studio.registry import resolve_model
from studio.ui import docs_tab
from tests.conftest import ROOT, STUDIO

pytestmark = pytest.mark.slow
LAKES = ("Lake Baikal in Siberia is the deepest lake on Earth, about 1,642 metres deep.\n\n"
         "Lake Superior is the largest of the Great Lakes of North America by surface area.\n\n"
         "The Dead Sea is a salt lake between Jordan and Israel, far below sea level.\n\n" +
         "".join(f"Pond {i} lies in a quiet valley; it is {i * 3} metres deep and has reeds.\n\n" for i in range(60)))
RIVERS = "The Danube flows through ten countries before it reaches the Black Sea.\n"


@pytest.fixture()
def home(fresh_home, tmp_path):
    """A fresh studio home with the two-layer model installed as ``minilm-2layers``, and two text files."""
    full = resolve_model("minilm-l6-v2").path
    small = tmp_path / "minilm-2layers"
    for f in full.rglob("*"):
        if f.is_file() and f != full / "config.json":
            (small / f.relative_to(full)).parent.mkdir(parents=True, exist_ok=True)
            (small / f.relative_to(full)).symlink_to(f)
    config = json.loads((full / "config.json").read_text())
    (small / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 2}))
    modelstore.import_model(small, "minilm-2layers", link=True)
    (tmp_path / "lakes.txt").write_text(LAKES)
    (tmp_path / "rivers.txt").write_text(RIVERS)
    return fresh_home


def ingestor(**cfg) -> Ingestor:
    return Ingestor(IngestConfig(embed_engine="torch", **cfg))


def stored(ing: Ingestor, collection: str) -> tuple[list[str], np.ndarray, list[str]]:
    got = ing.store.collection(collection, create=False).get(include=["embeddings", "documents"])
    order = np.argsort(got["ids"])
    return ([got["ids"][i] for i in order], np.asarray(got["embeddings"])[order],
            [got["documents"][i] for i in order])


def test_reembedding_moves_every_vector_to_the_new_model_and_later_work_follows(home, tmp_path):
    ing = ingestor()
    ing.ingest([tmp_path / "lakes.txt"], "lakes")
    assert ing.model_of("lakes") == "minilm-l6-v2"
    ids, before, texts = stored(ing, "lakes")
    seen = []
    n = ing.reembed("lakes", "minilm-2layers", lambda done, total, _c: seen.append((done, total)))
    assert n == len(ids) and seen[-1] == (len(ids), len(ids))
    assert ing.model_of("lakes") == "minilm-2layers"
    ids2, after, texts2 = stored(ing, "lakes")
    assert ids2 == ids and texts2 == texts  # the same chunks ...
    small = ing.embedder_named("minilm-2layers")
    want = np.asarray(small.encode(texts))
    assert np.allclose(after, want, atol=1e-4) and not np.allclose(after, before, atol=1e-2)  # ... new vectors
    # a search embeds the question with the collection's model: its scores are that model's cosines (the
    # two-layer model is a poor one, so which chunk wins is not the point)
    q = np.asarray(small.encode(["Lake Baikal in Siberia"])[0])
    for hit in ing.query("lakes", "Lake Baikal in Siberia", k=3):
        assert hit.score == pytest.approx(float(after[ids.index(hit.id)] @ q), abs=1e-3)
    # a file added later is embedded with the collection's model, not the configured one
    ing.ingest([tmp_path / "rivers.txt"], "lakes")
    rid = [i for i in stored(ing, "lakes")[0] if i not in ids]
    got = ing.store.collection("lakes", create=False).get(ids=rid, include=["embeddings", "documents"])
    assert np.allclose(got["embeddings"][0], small.encode(got["documents"])[0], atol=1e-4)
    # a new collection gets the configured model
    ing.ingest([tmp_path / "rivers.txt"], "rivers")
    assert ing.model_of("rivers") == "minilm-l6-v2"
    assert [e["action"] for e in audit.entries(home=home)].count("collection.reembed") == 1


def test_a_failed_reembedding_leaves_the_collection_as_it_was(home, tmp_path, monkeypatch):
    ing = ingestor()
    ing.ingest([tmp_path / "lakes.txt"], "lakes")
    ids, before, _ = stored(ing, "lakes")
    assert len(ids) >= 3
    small = ing.embedder_named("minilm-2layers")
    calls = {"n": 0}
    real = small.encode

    def failing(texts):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("the machine ran out of memory")
        return real(texts)

    monkeypatch.setattr(pipeline, "REEMBED_BATCH", 1)
    monkeypatch.setattr(small, "encode", failing)
    with pytest.raises(RuntimeError):
        ing.reembed("lakes", "minilm-2layers")
    assert any(n.startswith(TMP) for n in ing.store.all_names())  # half a new collection was left ...
    assert [c.name for c in ing.collections()] == ["lakes"]  # ... and the next look cleans it up
    assert not any(n.startswith(TMP) for n in ing.store.all_names())
    assert ing.model_of("lakes") == "minilm-l6-v2" and np.allclose(stored(ing, "lakes")[1], before)
    assert "Baikal" in ing.query("lakes", "Which lake is the deepest?", k=1)[0].text


def test_a_reembedding_killed_between_its_renames_is_finished_on_the_next_look(home, tmp_path):
    ing = ingestor()
    ing.ingest([tmp_path / "lakes.txt"], "lakes")
    ids, _, texts = stored(ing, "lakes")
    # the state a kill leaves after the old collection was moved aside and before the new one took its place
    new, old = f"{TMP}new.lakes", f"{TMP}old.lakes"
    ing.store.create(new, embed_model="minilm-2layers")
    got = ing.store.get_chunks("lakes")
    ing.store.add_chunks(new, got["ids"], ing.embedder_named("minilm-2layers").encode(got["documents"]),
                         got["documents"], got["metadatas"])
    ing.store.set_meta(new, complete="1")
    ing.store.rename("lakes", old)
    assert "lakes" not in ing.store.list_collections()
    assert [c.name for c in ing.collections()] == ["lakes"]
    assert ing.model_of("lakes") == "minilm-2layers" and stored(ing, "lakes")[0] == ids
    assert not any(n.startswith(TMP) for n in ing.store.all_names())


def test_the_embedding_role_sets_new_collections_and_keeps_old_ones_on_their_model(home, tmp_path):
    ing = ingestor()
    # a collection made before the studio recorded models (no embed_model in its metadata)
    ing.store.client.create_collection("legacy", configuration={"hnsw": {"space": "cosine"}},
                                       embedding_function=None)
    vec = ing.embedder_named("minilm-l6-v2").encode([LAKES])
    ing.store.add_chunks("legacy", ["legacy-0"], vec, [LAKES], [{"source": "lakes.txt", "chunk": 0}])
    assert ing.store.embed_model("legacy") is None
    cfg = StudioConfig()
    cfg.ingest.embed_engine = "torch"
    with pytest.raises(StudioError, match="not an installed sentence-transformers model"):
        modelstore.set_role("embedding", "smollm2-135m-instruct", cfg)
    modelstore.set_role("embedding", "minilm-2layers", cfg)
    assert cfg.ingest.embed_model == "minilm-2layers"
    assert ing.store.embed_model("legacy") == "minilm-l6-v2"  # recorded before the role changed
    assert modelstore.roles_of(cfg)["embedding"] == "minilm-2layers"
    fresh = Ingestor(cfg.ingest)
    fresh.ingest([tmp_path / "rivers.txt"], "rivers")
    assert fresh.model_of("rivers") == "minilm-2layers" and fresh.model_of("legacy") == "minilm-l6-v2"
    # and from the command line: the collections' models, and a re-embedding with its progress
    env = {**os.environ, "STUDIO_HOME": str(home)}
    rows = json.loads(subprocess.run([STUDIO, "docs", "collections", "--json"], capture_output=True, text=True,
                                     env=env, cwd=ROOT, timeout=120).stdout)
    assert {r["collection"]: r["embed_model"] for r in rows} == {"legacy": "minilm-l6-v2", "rivers": "minilm-2layers"}
    out = subprocess.run([STUDIO, "docs", "reembed", "--collection", "legacy", "--model", "minilm-2layers"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "legacy: 1 chunks embedded with minilm-2layers (was minilm-l6-v2)" in out.stdout
    assert "re-embedding legacy: 1 of 1 chunks" in out.stderr
    assert fresh.model_of("legacy") == "minilm-2layers"


def test_the_documents_tab_reembeds_its_owners_collection_only(home, tmp_path):
    accounts = Accounts(home)
    accounts.add("ada", "ada-password", admin=True)
    accounts.add("bob", "bob-password")
    service = docs_tab.DocsService(IngestConfig(embed_engine="torch"))
    ada = service.ingestor(user="ada")
    ada.ingest([tmp_path / "lakes.txt"], "ada-lakes")
    ada.publish("ada-lakes")
    assert "Embedded with **minilm-l6-v2**" in docs_tab._sharing(service, "ada-lakes", "bob")
    with pytest.raises(gr.Error, match="shared read-only; only its owner"):
        docs_tab.reembed({"collection": "ada-lakes", "reembed_model": "minilm-2layers"}, service=service, user="bob")
    with pytest.raises(gr.Error, match="the embedding model must be one of"):
        docs_tab.reembed({"collection": "ada-lakes", "reembed_model": "../../x"}, service=service, user="ada")
    shown = []
    done = docs_tab.reembed({"collection": "ada-lakes", "reembed_model": "minilm-2layers"}, service=service,
                            user="ada", progress=lambda *a, **k: shown.append((a, k)))
    assert "Embedded with **minilm-2layers**" in done["sharing"]
    assert any(k.get("unit") == "chunks" for _, k in shown)
    bob = service.ingestor(user="bob")  # the readers of the shared collection search it with its new model
    assert bob.model_of("ada-lakes") == "minilm-2layers" and len(bob.query("ada-lakes", "the deepest lake", k=2)) == 2

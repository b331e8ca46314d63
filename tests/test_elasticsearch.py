"""``retriever=elasticsearch``.

Two kinds of tests, kept apart on purpose:

* offline checks that need no server: the YAML -> index settings translation, config validation,
  credentials from the environment, the manifest checks, the error for an unreachable server (a real
  client against a closed local port) and the lazy import.  None of them tests Elasticsearch itself.
* tests against a real Elasticsearch 8.x server with the analysis-nori plugin, run only when ``ES_URL``
  is set (otherwise skipped with the reason "ES_URL not set"); they create and delete their own indices.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from core.errors import DataFormatError
from retrievals.bm25 import BM25Retriever
from retrievals.corpus import Passage, corpus_fingerprint, gold_passage_ids, load_corpus
from retrievals.elasticsearch import ANALYZER_DEFAULTS, ElasticsearchRetriever, connection_settings
from retrievals.manifest import load_retriever
from retrievals.metrics import retrieval_metrics
from retrievals.protocol import Retriever
from retrievals.sparse import SparseRetriever
from tasks.retrieve import TASK_KEYS, read_queries
from tests.conftest import ROOT, SAMPLE, read_json, run_main

ENV_KEYS = ("ES_URL", "ES_API_KEY", "ES_USERNAME", "ES_PASSWORD")
needs_server = pytest.mark.skipif(not os.environ.get("ES_URL"), reason="ES_URL not set")


def configured(*overrides: str) -> ElasticsearchRetriever:
    """The retriever conf/retriever/elasticsearch.yaml builds, through real Hydra composition."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["retriever=elasticsearch", *overrides])
    kwargs = OmegaConf.to_container(cfg.retriever, resolve=True)
    for key in TASK_KEYS:
        kwargs.pop(key)
    return instantiate(kwargs, _convert_="all")


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def corpus() -> list[Passage]:
    return load_corpus(SAMPLE / "corpus.jsonl")


# ----------------------------------------------------------------------------- offline (no server)


def test_yaml_translates_to_nori_index_settings(clean_env: pytest.MonkeyPatch) -> None:
    retriever = configured(
        "retriever.analyzer.decompound_mode=discard", "retriever.analyzer.stoptags=[J,E,MAG]",
        "retriever.similarity.k1=0.9", "retriever.similarity.b=0.4", "retriever.index_name=wiki-ko",
    )
    body = retriever.index_body()
    analysis = body["settings"]["analysis"]
    (tokenizer,) = analysis["tokenizer"].values()
    assert tokenizer == {"type": "nori_tokenizer", "decompound_mode": "discard", "discard_punctuation": True}
    (pos_filter_name, pos_filter), = analysis["filter"].items()
    assert pos_filter == {"type": "nori_part_of_speech", "stoptags": ["E", "J", "MAG"]}
    (analyzer_name, analyzer), = analysis["analyzer"].items()
    assert analyzer["filter"] == [pos_filter_name, "nori_readingform", "lowercase"]
    (similarity_name, similarity), = body["settings"]["similarity"].items()
    assert similarity == {"type": "BM25", "k1": 0.9, "b": 0.4}
    text_field = body["mappings"]["properties"]["content"]
    assert text_field == {"type": "text", "analyzer": analyzer_name, "similarity": similarity_name}
    assert body["mappings"]["dynamic"] == "strict"
    assert retriever.index_name == "wiki-ko" and retriever.url == "http://localhost:9200"
    # the query: a BM25 match on the same field, ties broken by corpus order
    query = retriever.query_body("경복궁", 7)
    assert query["query"] == {"match": {"content": {"query": "경복궁"}}} and query["size"] == 7
    assert query["sort"][1] == {"corpus_index": {"order": "asc"}}


def test_yaml_defaults_are_the_nori_plugin_defaults(clean_env: pytest.MonkeyPatch) -> None:
    """The YAML spells out the plugin's documented stop tags, so a reader sees what is dropped."""
    retriever = configured()
    plugin_default = ["E", "IC", "J", "MAG", "MAJ", "MM", "SP", "SSC", "SSO", "SC", "SE", "XPN", "XSA", "XSN",
                      "XSV", "UNA", "NA", "VSV"]
    assert retriever.tokenizer.config["stoptags"] == sorted(plugin_default)
    assert sorted(ANALYZER_DEFAULTS["stoptags"]) == sorted(plugin_default)
    assert retriever.tokenizer.config["decompound_mode"] == "mixed"
    assert (retriever.k1, retriever.b) == (1.2, 0.75)


def test_settings_hash_follows_what_changes_the_index(clean_env: pytest.MonkeyPatch) -> None:
    base = configured().settings_hash
    operational = ("retriever.number_of_replicas=2", "retriever.refresh_interval=30s",
                   "retriever.msearch_batch_size=8")
    assert configured(*operational).settings_hash == base
    scoring = ("retriever.analyzer.decompound_mode=none", "retriever.analyzer.stoptags=[J]",
               "retriever.similarity.b=0.5", "retriever.index_title=false", "retriever.number_of_shards=3")
    changed = {configured(override).settings_hash for override in scoring}
    assert base not in changed and len(changed) == 5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("retriever.analyzer.decompound_mode=split", "decompound_mode='split'"),
        ("retriever.analyzer.stoptags=[J,NNX]", "unknown nori part-of-speech tag(s) ['NNX']"),
        ("+retriever.analyzer.decompound=mixed", "unknown option(s) ['decompound']"),
        ("retriever.similarity.b=1.5", "retriever.similarity.b=1.5"),
        ("retriever.index_name=Wiki_KO", "retriever.index_name='Wiki_KO'"),
        ("retriever.url=http://elastic:secret@localhost:9200", "retriever.url carries credentials"),
        ("retriever.url=localhost:9200", "is not an http(s) URL"),
        ("retriever.search_type=fast", "retriever.search_type='fast'"),
        ("retriever.msearch_batch_size=0", "retriever.msearch_batch_size=0"),
    ],
)
def test_bad_config_is_refused_naming_the_key(clean_env: pytest.MonkeyPatch, override: str, message: str
                                              ) -> None:
    with pytest.raises(Exception) as caught:
        configured(override)
    error = caught.value
    while error.__cause__ is not None and not isinstance(error, ValueError):  # Hydra wraps constructor errors
        error = error.__cause__
    assert isinstance(error, ValueError) and message in str(error)
    assert "secret" not in str(error)


def test_credentials_come_from_the_environment_only(clean_env: pytest.MonkeyPatch) -> None:
    assert connection_settings(None) == ("http://localhost:9200", {})
    clean_env.setenv("ES_URL", "https://elastic:pa%40ss@es.example:9243/")
    assert connection_settings(None) == ("https://es.example:9243", {"basic_auth": ("elastic", "pa@ss")})
    clean_env.setenv("ES_API_KEY", "abc")
    with pytest.raises(ValueError, match="either ES_API_KEY or basic auth"):
        connection_settings(None)
    clean_env.setenv("ES_URL", "https://es.example:9243")
    assert connection_settings(None) == ("https://es.example:9243", {"api_key": "abc"})
    # an explicit config URL wins over $ES_URL; credentials still come from the environment
    assert connection_settings("http://other:9200") == ("http://other:9200", {"api_key": "abc"})
    clean_env.delenv("ES_API_KEY")
    clean_env.setenv("ES_USERNAME", "elastic")
    with pytest.raises(ValueError, match="both ES_USERNAME and ES_PASSWORD"):
        connection_settings(None)
    clean_env.setenv("ES_PASSWORD", "pw")
    assert connection_settings(None)[1] == {"basic_auth": ("elastic", "pw")}


def _offline_manifest(directory: Path, passages: list[Passage], **kwargs) -> ElasticsearchRetriever:
    """Write the manifest an index of ``passages`` would get, without a server (the state ``index`` sets)."""
    retriever = ElasticsearchRetriever(index_name="kornlp-offline", **kwargs)
    retriever.n_passages = len(passages)
    retriever.corpus_fingerprint = corpus_fingerprint(passages)
    retriever.save(directory)
    return retriever


def test_manifest_points_at_the_index_without_credentials(clean_env: pytest.MonkeyPatch, tmp_path: Path,
                                                          corpus: list[Passage]) -> None:
    clean_env.setenv("ES_URL", "https://elastic:hunter2@es.example:9243")
    retriever = _offline_manifest(tmp_path, corpus[:50])
    text = (tmp_path / "manifest.json").read_text(encoding="utf-8")
    assert "hunter2" not in text and "elastic:" not in text
    manifest = json.loads(text)
    assert manifest["retriever"] == "elasticsearch"
    assert manifest["elasticsearch"]["url"] == "https://es.example:9243"
    assert manifest["elasticsearch"]["index"] == "kornlp-offline"
    assert manifest["elasticsearch"]["settings_hash"] == retriever.settings_hash
    assert manifest["corpus"] == {"fingerprint": corpus_fingerprint(corpus[:50]), "passages": 50}
    assert sorted(os.listdir(tmp_path)) == ["manifest.json"]  # the index itself stays on the server


def test_manifest_checks_refuse_another_corpus_analyzer_or_settings(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, corpus: list[Passage]
) -> None:
    built = _offline_manifest(tmp_path, corpus[:50])
    with pytest.raises(DataFormatError, match="different corpus"):
        load_retriever(tmp_path, passages=corpus[:49])
    other = ElasticsearchRetriever(index_name="kornlp-offline", analyzer={"decompound_mode": "none"})
    with pytest.raises(DataFormatError, match="decompound_mode: index 'mixed' vs asked 'none'"):
        load_retriever(tmp_path, tokenizer=other.tokenizer.config)
    with pytest.raises(DataFormatError, match="settings_hash"):
        load_retriever(tmp_path, params=other.params())
    with pytest.raises(DataFormatError, match="index_title=True"):
        load_retriever(tmp_path, index_title=False)
    with pytest.raises(DataFormatError, match="this is a elasticsearch index, not a bm25 one"):
        BM25Retriever.load(tmp_path)
    # Every check passes: the next step is the server, which is not there.
    clean_env.setenv("ES_URL", f"http://127.0.0.1:{closed_port()}")
    pytest.importorskip("elasticsearch")
    with pytest.raises(ValueError, match="cannot reach Elasticsearch at http://127.0.0.1:"):
        load_retriever(tmp_path, passages=corpus[:50], tokenizer=built.tokenizer.config,
                       params=built.params(), index_title=True)


def test_unreachable_server_is_one_clear_line_from_main(clean_env: pytest.MonkeyPatch, tmp_path: Path
                                                        ) -> None:
    pytest.importorskip("elasticsearch")
    port = closed_port()
    clean_env.setenv("ES_URL", f"http://127.0.0.1:{port}")
    result = run_main("task=retrieve", "retriever=elasticsearch",
                      f"retriever.corpus_file={SAMPLE / 'corpus.jsonl'}", "print_config=false",
                      run_dir=tmp_path / "run", check=False)
    assert result.returncode == 1
    assert f"cannot reach Elasticsearch at http://127.0.0.1:{port}" in result.stderr
    assert "set ES_URL" in result.stderr and "Traceback" not in result.stderr


def test_module_works_without_the_client_until_a_server_is_needed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setitem(sys.modules, "elasticsearch", None)  # import elasticsearch -> ImportError
    retriever = ElasticsearchRetriever()
    assert retriever.index_body()["settings"]["analysis"]
    with pytest.raises(ValueError, match=r"pip install 'kornlp-framework\[es\]'"):
        retriever.connect()


def test_nothing_indexed_is_a_clear_error_and_there_are_no_local_token_apis(clean_env: pytest.MonkeyPatch
                                                                           ) -> None:
    """A peer of the sparse engine implementing the protocol itself: no stub hooks of an in-memory index."""
    retriever = ElasticsearchRetriever()
    with pytest.raises(RuntimeError, match="nothing indexed yet"):
        retriever.search(["질문"], 5)
    with pytest.raises(RuntimeError, match="nothing indexed yet"):
        retriever.save("unused")
    assert isinstance(retriever, Retriever) and not isinstance(retriever, SparseRetriever)
    assert not any(hasattr(retriever, name) for name in ("search_tokens", "index_tokens", "get_scores"))


# ----------------------------------------------------------------------------- a real Elasticsearch server


@pytest.fixture
def es_index():
    """A unique index name on the ES_URL server; the index is deleted afterwards."""
    name = f"kornlp-test-{uuid.uuid4().hex[:12]}"
    yield name
    ElasticsearchRetriever(index_name=name).drop()


@needs_server
def test_es_server_has_the_yaml_settings(es_index: str, corpus: list[Passage]) -> None:
    retriever = ElasticsearchRetriever(index_name=es_index, analyzer={"decompound_mode": "discard"},
                                       similarity={"k1": 0.9, "b": 0.4}).index(corpus[:100])
    settings = next(iter(retriever.connect().indices.get_settings(index=es_index).body.values()))["settings"]
    analysis = settings["index"]["analysis"]
    assert next(iter(analysis["tokenizer"].values()))["decompound_mode"] == "discard"
    stoptags = next(iter(analysis["filter"].values()))["stoptags"]
    assert sorted(stoptags) == sorted(ANALYZER_DEFAULTS["stoptags"])
    similarity = next(iter(settings["index"]["similarity"].values()))
    assert (similarity["type"], float(similarity["k1"]), float(similarity["b"])) == ("BM25", 0.9, 0.4)
    # nori removes the particles (J) and endings (E) of the stop tags
    tokens = retriever.analyze("뿌리가 깊은 나무는")
    assert "뿌리" in tokens and "나무" in tokens and not {"가", "는", "은"} & set(tokens)


@needs_server
def test_es_decompound_mode_reaches_the_analyzer(es_index: str, corpus: list[Passage]) -> None:
    modes = {}
    for mode in ("none", "mixed"):
        retriever = ElasticsearchRetriever(index_name=es_index, analyzer={"decompound_mode": mode},
                                           recreate=True)
        retriever.index(corpus[:20])
        modes[mode] = retriever.analyze("가곡역")
    assert modes["none"] == ["가곡역"]
    assert modes["mixed"][0] == "가곡역" and len(modes["mixed"]) > 1


@needs_server
def test_es_retrieves_the_sample_questions(es_index: str, corpus: list[Passage]) -> None:
    questions = read_queries(SAMPLE / "validation.json")
    gold = gold_passage_ids(questions, corpus)
    retriever = ElasticsearchRetriever(index_name=es_index, msearch_batch_size=16).index(corpus)
    result = retriever.search([q.question for q in questions], 20)
    assert len(result.ids) == len(questions)
    known = {p.id for p in corpus}
    for ids, scores in zip(result.ids, result.scores, strict=True):
        assert len(ids) <= 20 and set(ids) <= known and len(set(ids)) == len(ids)
        assert scores == sorted(scores, reverse=True)
    qids = [q.id for q in questions]
    es = retrieval_metrics(dict(zip(qids, result.ids, strict=True)), gold, (1, 20), mrr_k=20)
    # nori's morphology should beat whitespace tokens (which keep the particles glued to the nouns)
    plain = BM25Retriever(tokenizer="whitespace", k1=1.2, b=0.75).index(corpus)
    plain_ids = plain.search([q.question for q in questions], 20).ids
    ws = retrieval_metrics(dict(zip(qids, plain_ids, strict=True)), gold, (1, 20), mrr_k=20)
    assert es["recall@20"] > ws["recall@20"], (es, ws)
    # msearch batching does not change the answers
    again = ElasticsearchRetriever(index_name=es_index, msearch_batch_size=7).index(corpus)
    assert again.search([q.question for q in questions[:30]], 20).ids == result.ids[:30]


@needs_server
def test_es_refuses_an_index_built_differently(es_index: str, corpus: list[Passage]) -> None:
    ElasticsearchRetriever(index_name=es_index).index(corpus[:100])
    with pytest.raises(ValueError, match="decompound_mode: index 'mixed' vs config 'none'"):
        ElasticsearchRetriever(index_name=es_index, analyzer={"decompound_mode": "none"}).index(corpus[:100])
    with pytest.raises(ValueError, match="holds another corpus"):
        ElasticsearchRetriever(index_name=es_index).index(corpus[:99])
    reused = ElasticsearchRetriever(index_name=es_index).index(corpus[:100])  # same settings and corpus
    assert reused.search([corpus[5].title], 1).ids[0]
    rebuilt = ElasticsearchRetriever(index_name=es_index, recreate=True).index(corpus[:99])
    assert rebuilt.index_meta()["passages"] == 99


@needs_server
def test_es_save_and_load(es_index: str, corpus: list[Passage], tmp_path: Path) -> None:
    built = ElasticsearchRetriever(index_name=es_index).index(corpus[:200])
    built.save(tmp_path)
    queries = [p.title for p in corpus[:10]]
    loaded = load_retriever(tmp_path, passages=corpus[:200], tokenizer=built.tokenizer.config,
                            params=built.params(), index_title=True)
    assert isinstance(loaded, ElasticsearchRetriever)
    assert loaded.search(queries, 5) == built.search(queries, 5)
    built.drop()
    with pytest.raises(DataFormatError, match="does not exist"):
        load_retriever(tmp_path)


@needs_server
def test_es_task_retrieve_end_to_end(es_index: str, tmp_path: Path) -> None:
    args = ["task=retrieve", "retriever=elasticsearch", f"retriever.index_name={es_index}",
            f"retriever.corpus_file={SAMPLE / 'corpus.jsonl'}", f"retriever.index_dir={tmp_path / 'index'}",
            "print_config=false"]
    run_main(*args, run_dir=tmp_path / "first")
    first = read_json(tmp_path / "first" / "retrieval_metrics.json")
    assert (first["retriever"], first["tokenizer"], first["index_loaded"]) == ("elasticsearch", "nori", False)
    run_main(*args, run_dir=tmp_path / "second")
    second = read_json(tmp_path / "second" / "retrieval_metrics.json")
    assert second["index_loaded"] and second["recall@20"] == first["recall@20"]

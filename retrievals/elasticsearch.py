"""Elasticsearch (``retriever=elasticsearch``): BM25 over a nori-analysed index on a server, for corpora
that outgrow one machine.

The index lives on the server; this class creates it from ``conf/retriever/elasticsearch.yaml`` (the
``nori_tokenizer`` with its ``decompound_mode``, a ``nori_part_of_speech`` filter with its ``stoptags``,
``nori_readingform`` and ``lowercase``, and a BM25 similarity with ``k1`` / ``b``), bulk-indexes the
passages and answers batches of queries with one ``msearch`` per batch::

    retriever = ElasticsearchRetriever(index_name="wiki").index(passages)   # ES_URL, ES_API_KEY from env
    ids, scores = retriever.search(["경복궁은 언제 지어졌나?"], k=20)
    retriever.save("indexes/es")        # manifest.json only: URL (no credentials), index, settings hash
    retriever = load_retriever("indexes/es", passages=passages)             # checks corpus and index

Every index carries its settings hash and corpus fingerprint in its mapping's ``_meta``, so an existing
index built with other settings or from another corpus is refused (``recreate: true`` rebuilds it),
never silently reused.  Credentials come from the environment only (``ES_API_KEY``, or ``ES_USERNAME`` and
``ES_PASSWORD``, or ``user:password@`` in ``ES_URL``), never from a config file.

The ``elasticsearch`` client is imported only when a server is contacted:
``pip install 'kornlp-framework[es]'``.  Unlike BM25 / TF-IDF, a query gets only the passages that share
an analysed term with it (at most ``k``), not a list padded with zero scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from core.errors import DataFormatError
from retrievals.base import Retriever, SearchResult, read_manifest
from retrievals.corpus import Passage, corpus_fingerprint
from retrievals.tokenizers import TokenizedCorpus, _atomic_write_text

__all__ = ["ElasticsearchRetriever", "NoriAnalyzer", "connection_settings"]

log = logging.getLogger(__name__)

DEFAULT_URL = "http://localhost:9200"
DECOMPOUND_MODES = ("none", "discard", "mixed")
# Lucene's org.apache.lucene.analysis.ko.POS.Tag: what nori_part_of_speech accepts as stop tags.
NORI_TAGS = frozenset([
    "E", "IC", "J", "MAG", "MAJ", "MM", "NA", "NNB", "NNBC", "NNG", "NNP", "NP", "NR", "SC", "SE", "SF",
    "SH", "SL", "SN", "SP", "SSC", "SSO", "SY", "UNA", "UNKNOWN", "VA", "VCN", "VCP", "VSV", "VV", "VX",
    "XPN", "XR", "XSA", "XSN", "XSV",
])
ANALYZER_DEFAULTS: dict[str, Any] = {
    "decompound_mode": "mixed",
    "discard_punctuation": True,
    "user_dictionary_rules": [],
    # the nori_part_of_speech default
    "stoptags": ["E", "IC", "J", "MAG", "MAJ", "MM", "SP", "SSC", "SSO", "SC", "SE", "XPN", "XSA", "XSN",
                 "XSV", "UNA", "NA", "VSV"],
    "readingform": True,
    "lowercase": True,
}
SIMILARITY_DEFAULTS: dict[str, Any] = {"k1": 1.2, "b": 0.75}
# Names inside the index settings.
ANALYZER, TOKENIZER = "kornlp_nori", "kornlp_nori_tokenizer"
POS_FILTER, SIMILARITY = "kornlp_nori_pos", "kornlp_bm25"
TEXT_FIELD, ORDER_FIELD = "content", "corpus_index"
META_KEY = "kornlp"
META_VERSION = 1
MAX_RESULT_WINDOW = 10_000  # Elasticsearch's index.max_result_window default: the deepest k a search can ask
MAX_ID_BYTES = 512  # Elasticsearch's limit on a document _id
_INSTALL = "pip install 'kornlp-framework[es]' (or pip install 'elasticsearch>=8,<9')"
_NORI_FIX = ("install the analysis-nori plugin on every node (bin/elasticsearch-plugin install "
             "analysis-nori) and restart them")
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SERVER_SIDE = ("retriever=elasticsearch analyses and scores on the server (nori, BM25): use "
                "index(passages) and search(queries, k); there are no local tokens or arrays")


# ----------------------------------------------------------------------------- connection


def connection_settings(url: str | None = None) -> tuple[str, dict[str, Any]]:
    """The server URL without credentials, and the client's auth keyword arguments.

    ``url`` comes from the config and must carry no credentials; ``None`` falls back to ``$ES_URL``, then
    ``http://localhost:9200``.  Credentials: ``ES_API_KEY``, or ``ES_USERNAME`` + ``ES_PASSWORD``, or
    ``user:password@`` inside ``$ES_URL`` (environment only, so they never reach a config or manifest).
    """
    from_env = not url
    raw = str(url) if url else (os.environ.get("ES_URL") or DEFAULT_URL)
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        where = "$ES_URL" if from_env else "retriever.url"
        shown = _strip_credentials(raw)
        raise ValueError(f"{where}={shown!r} is not an http(s) URL; use e.g. {DEFAULT_URL}.")
    auth: dict[str, Any] = {}
    if parts.username is not None or parts.password is not None:
        if not from_env:
            raise ValueError(
                "retriever.url carries credentials: remove them from the config and set ES_API_KEY, or "
                "ES_USERNAME and ES_PASSWORD, in the environment instead."
            )
        auth["basic_auth"] = (unquote(parts.username or ""), unquote(parts.password or ""))
    api_key = os.environ.get("ES_API_KEY")
    user, password = os.environ.get("ES_USERNAME"), os.environ.get("ES_PASSWORD")
    if (user is None) != (password is None):
        raise ValueError("set both ES_USERNAME and ES_PASSWORD (basic auth), or neither.")
    if user is not None:
        auth["basic_auth"] = (user, password)
    if api_key:
        if "basic_auth" in auth:
            raise ValueError("set either ES_API_KEY or basic auth (ES_USERNAME / ES_PASSWORD, or user:pass@ "
                             "in ES_URL), not both.")
        auth["api_key"] = api_key
    return _strip_credentials(raw), auth


def _strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)).rstrip("/")


def _import_client() -> Any:
    try:
        import elasticsearch
    except ImportError:
        raise ValueError(f"retriever=elasticsearch needs the Elasticsearch client: {_INSTALL}.") from None
    return elasticsearch


def _reason(error: BaseException) -> str:
    """The server's own explanation of an API error, else the error text."""
    info = getattr(error, "info", None)
    if isinstance(info, Mapping) and info.get("error"):
        return _reason_of(info["error"])
    return str(error)


# ----------------------------------------------------------------------------- analyzer


class NoriAnalyzer:
    """What the server's nori analyzer is configured as: the ``tokenizer`` of this retriever.

    Text is analysed on the server, so this object only describes it (``name``, ``config``,
    ``fingerprint``) for the manifest, the metrics and the load-time checks.
    """

    name = "nori"

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        cfg = {**ANALYZER_DEFAULTS, **dict(config or {})}
        unknown = sorted(set(cfg) - set(ANALYZER_DEFAULTS))
        if unknown:
            raise ValueError(f"retriever.analyzer has unknown option(s) {unknown}; known: "
                             f"{', '.join(ANALYZER_DEFAULTS)}.")
        if cfg["decompound_mode"] not in DECOMPOUND_MODES:
            raise ValueError(f"retriever.analyzer.decompound_mode={cfg['decompound_mode']!r}: use one of "
                             f"{', '.join(DECOMPOUND_MODES)}.")
        if isinstance(cfg["stoptags"], str) or not isinstance(cfg["stoptags"], Sequence):
            raise ValueError(f"retriever.analyzer.stoptags={cfg['stoptags']!r}: give a list of nori tags, "
                             "e.g. [E, J].")
        bad = sorted({str(t) for t in cfg["stoptags"]} - NORI_TAGS)
        if bad:
            raise ValueError(f"retriever.analyzer.stoptags: unknown nori part-of-speech tag(s) {bad}; known: "
                             f"{', '.join(sorted(NORI_TAGS))}.")
        rules = cfg["user_dictionary_rules"] or []
        if isinstance(rules, str) or not all(isinstance(r, str) and r.strip() for r in rules):
            raise ValueError("retriever.analyzer.user_dictionary_rules: give a list of non-empty strings, "
                             "e.g. ['세종시', '세종시 세종 시'] (a word, then optionally its segmentation).")
        self._config = {
            "name": self.name,
            "decompound_mode": str(cfg["decompound_mode"]),
            "discard_punctuation": bool(cfg["discard_punctuation"]),
            "user_dictionary_rules": [str(r) for r in rules],
            "stoptags": sorted({str(t) for t in cfg["stoptags"]}),
            "readingform": bool(cfg["readingform"]),
            "lowercase": bool(cfg["lowercase"]),
        }

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._config))

    def describe(self) -> str:
        return json.dumps(self._config, ensure_ascii=False, sort_keys=True)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self._config, sort_keys=True).encode()).hexdigest()[:16]

    def versions(self) -> dict[str, str]:
        return {}

    def analysis(self) -> dict[str, Any]:
        """``settings.analysis``: nori_tokenizer -> part-of-speech stop filter -> readingform -> lowercase."""
        cfg = self._config
        tokenizer: dict[str, Any] = {"type": "nori_tokenizer", "decompound_mode": cfg["decompound_mode"],
                                     "discard_punctuation": cfg["discard_punctuation"]}
        if cfg["user_dictionary_rules"]:
            tokenizer["user_dictionary_rules"] = cfg["user_dictionary_rules"]
        filters = [POS_FILTER]
        if cfg["readingform"]:
            filters.append("nori_readingform")
        if cfg["lowercase"]:
            filters.append("lowercase")
        return {
            "tokenizer": {TOKENIZER: tokenizer},
            "filter": {POS_FILTER: {"type": "nori_part_of_speech", "stoptags": cfg["stoptags"]}},
            "analyzer": {ANALYZER: {"type": "custom", "tokenizer": TOKENIZER, "filter": filters}},
        }


# ----------------------------------------------------------------------------- the retriever


class ElasticsearchRetriever(Retriever):
    """BM25 with the nori analyzer on an Elasticsearch 8.x server (see the module docstring)."""

    kind = "elasticsearch"

    def __init__(
        self,
        *,
        url: str | None = None,
        index_name: str = "kornlp-passages",
        recreate: bool = False,
        index_title: bool = True,
        analyzer: Mapping[str, Any] | None = None,
        similarity: Mapping[str, Any] | None = None,
        number_of_shards: int = 1,
        number_of_replicas: int = 0,
        refresh_interval: str = "1s",
        search_type: str | None = None,
        request_timeout: float = 60.0,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        bulk_chunk_size: int = 500,
        msearch_batch_size: int = 64,
        max_concurrent_searches: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        engine: str = "auto",
    ) -> None:
        # cache_dir / engine are the task glue's common keywords: nothing is cached or scored locally here.
        super().__init__(None, index_title=index_title, cache_dir=cache_dir, engine="numpy")
        self.tokenizer = NoriAnalyzer(analyzer)  # type: ignore[assignment]  (analysis runs on the server)
        self.url, self._auth = connection_settings(url)
        name = str(index_name)
        if not _INDEX_NAME.match(name) or len(name.encode()) > 255 or name in (".", ".."):
            raise ValueError(f"retriever.index_name={index_name!r}: Elasticsearch index names are lowercase, "
                             "start with a letter or digit and use only a-z 0-9 . _ - (e.g. kornlp-wiki).")
        self.index_name = name
        self.recreate = bool(recreate)
        sim = {**SIMILARITY_DEFAULTS, **dict(similarity or {})}
        unknown = sorted(set(sim) - set(SIMILARITY_DEFAULTS))
        if unknown:
            raise ValueError(f"retriever.similarity has unknown option(s) {unknown}; known: k1, b.")
        self.k1, self.b = float(sim["k1"]), float(sim["b"])
        if not self.k1 >= 0:
            raise ValueError(f"retriever.similarity.k1={sim['k1']!r}: must be >= 0 (typical 0.9-2.0).")
        if not 0 <= self.b <= 1:
            raise ValueError(f"retriever.similarity.b={sim['b']!r}: must lie in [0, 1] (typical 0.75).")
        counts = {"number_of_shards": (number_of_shards, 1), "number_of_replicas": (number_of_replicas, 0),
                  "bulk_chunk_size": (bulk_chunk_size, 1), "msearch_batch_size": (msearch_batch_size, 1)}
        for key, (value, low) in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"retriever.{key}={value!r}: must be an integer >= {low}.")
        if search_type not in (None, "query_then_fetch", "dfs_query_then_fetch"):
            raise ValueError(f"retriever.search_type={search_type!r}: use null, query_then_fetch or "
                             "dfs_query_then_fetch (exact corpus-wide idf when number_of_shards > 1).")
        self.number_of_shards, self.number_of_replicas = number_of_shards, number_of_replicas
        self.refresh_interval = str(refresh_interval)
        self.search_type = search_type
        self.request_timeout = float(request_timeout)
        self.verify_certs, self.ca_certs = bool(verify_certs), ca_certs
        self.bulk_chunk_size, self.msearch_batch_size = bulk_chunk_size, msearch_batch_size
        self.max_concurrent_searches = max_concurrent_searches
        self.server_version: str | None = None
        self.n_passages = 0
        self._client: Any = None

    # ------------------------------------------------------------------ settings

    def index_config(self) -> dict[str, Any]:
        """Everything that decides what the index holds and how it scores (hashed into ``settings_hash``)."""
        return {"analyzer": self.tokenizer.config, "similarity": {"k1": self.k1, "b": self.b},
                "number_of_shards": self.number_of_shards, "index_title": self.index_title}

    @property
    def settings_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.index_config(), sort_keys=True).encode()).hexdigest()[:16]

    def index_body(self) -> dict[str, Any]:
        """``settings`` and ``mappings`` of the index to create (``_meta`` is added when it is created)."""
        return {
            "settings": {
                "number_of_shards": self.number_of_shards,
                "number_of_replicas": self.number_of_replicas,
                "refresh_interval": self.refresh_interval,
                "max_result_window": MAX_RESULT_WINDOW,
                "similarity": {SIMILARITY: {"type": "BM25", "k1": self.k1, "b": self.b}},
                "analysis": self.tokenizer.analysis(),
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    TEXT_FIELD: {"type": "text", "analyzer": ANALYZER, "similarity": SIMILARITY},
                    ORDER_FIELD: {"type": "integer"},
                },
            },
        }

    def query_body(self, query: str, k: int) -> dict[str, Any]:
        """One search of ``msearch``: BM25 match on the passage text, best first, ties in corpus order."""
        return {
            "query": {"match": {TEXT_FIELD: {"query": query}}},
            "size": k,
            "_source": False,
            "track_total_hits": False,
            "sort": [{"_score": {"order": "desc"}}, {ORDER_FIELD: {"order": "asc"}}],
        }

    def params(self) -> dict[str, Any]:
        return {"index_name": self.index_name, "decompound_mode": self.tokenizer.config["decompound_mode"],
                "k1": self.k1, "b": self.b, "settings_hash": self.settings_hash}

    def constructor_config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this retriever on load (no URL, no credentials)."""
        return {
            "index_name": self.index_name, "index_title": self.index_title,
            "analyzer": {k: v for k, v in self.tokenizer.config.items() if k != "name"},
            "similarity": {"k1": self.k1, "b": self.b}, "number_of_shards": self.number_of_shards,
            "number_of_replicas": self.number_of_replicas, "refresh_interval": self.refresh_interval,
            "search_type": self.search_type, "request_timeout": self.request_timeout,
            "verify_certs": self.verify_certs, "ca_certs": self.ca_certs,
            "bulk_chunk_size": self.bulk_chunk_size, "msearch_batch_size": self.msearch_batch_size,
            "max_concurrent_searches": self.max_concurrent_searches,
        }

    def _meta(self, *, complete: bool, fingerprint: str | None, passages: int) -> dict[str, Any]:
        return {META_KEY: {"version": META_VERSION, "settings_hash": self.settings_hash,
                           "config": self.index_config(), "corpus_fingerprint": fingerprint,
                           "passages": passages, "complete": complete}}

    # ------------------------------------------------------------------ the server

    def connect(self) -> Any:
        """The client, after checking that the server answers (clear errors for URL, auth and version)."""
        if self._client is not None:
            return self._client
        es = _import_client()
        kwargs: dict[str, Any] = {"request_timeout": self.request_timeout, "verify_certs": self.verify_certs,
                                  "retry_on_timeout": True, "max_retries": 2, **self._auth}
        if self.ca_certs:
            kwargs["ca_certs"] = str(self.ca_certs)
        client = es.Elasticsearch(self.url, **kwargs)
        try:
            info = client.info()
        except es.AuthenticationException:
            raise ValueError(f"Elasticsearch at {self.url} refused the credentials (401): set ES_API_KEY, or "
                             "ES_USERNAME and ES_PASSWORD, in the environment.") from None
        except es.UnsupportedProductError as error:
            raise ValueError(f"{self.url} is not an Elasticsearch 8.x server ({error}); point ES_URL at one."
                             ) from None
        except es.ApiError as error:
            status = error.meta.status
            raise ValueError(f"Elasticsearch at {self.url} answered {status}: {_reason(error)}.") from None
        except es.TransportError as error:
            raise ValueError(
                f"cannot reach Elasticsearch at {self.url} ({type(error).__name__}: {error}): start a server "
                "(with the analysis-nori plugin) and set ES_URL to it, e.g. ES_URL=http://localhost:9200."
            ) from None
        self.server_version = str(info["version"]["number"])
        if int(self.server_version.split(".")[0]) < 8:
            raise ValueError(f"Elasticsearch at {self.url} is {self.server_version}; this client needs "
                             "8.x or newer.")
        self._client = client
        return client

    def _check_nori(self, client: Any) -> None:
        es = _import_client()
        try:
            client.indices.analyze(tokenizer="nori_tokenizer", text="한국어 형태소 분석")
        except es.BadRequestError as error:
            raise ValueError(f"Elasticsearch at {self.url} has no nori analyzer ({_reason(error)}): "
                             f"{_NORI_FIX}.") from None

    def index_meta(self) -> dict[str, Any] | None:
        """The ``_meta`` this framework stored in the index's mapping; None when there is no such index."""
        client = self.connect()
        if not client.indices.exists(index=self.index_name):
            return None
        mappings = next(iter(client.indices.get_mapping(index=self.index_name).body.values()))["mappings"]
        return dict(mappings.get("_meta", {}).get(META_KEY) or {})

    def drop(self) -> None:
        """Delete the server index (if it exists)."""
        client = self.connect()
        client.options(ignore_status=404).indices.delete(index=self.index_name)
        self.n_passages = 0

    def analyze(self, text: str) -> list[str]:
        """The tokens the index's analyzer makes of ``text`` (to inspect decompounding and stop tags)."""
        client = self.connect()
        tokens = client.indices.analyze(index=self.index_name, analyzer=ANALYZER, text=text)["tokens"]
        return [t["token"] for t in tokens]

    # ------------------------------------------------------------------ indexing

    @property
    def is_indexed(self) -> bool:
        return self.n_passages > 0

    def index(self, passages: Sequence[Passage], *, source: str | None = None) -> ElasticsearchRetriever:
        """Create the index and bulk-index ``passages``, or reuse an index built from the same settings and
        corpus; refuse any other existing index unless ``recreate``.  Returns ``self``."""
        where = source or "the corpus"
        self._check_passages(passages, where)
        for passage in passages:
            if len(passage.id.encode("utf-8")) > MAX_ID_BYTES:
                raise DataFormatError(where, passage.id[:40] + "...", f"passage id over {MAX_ID_BYTES} bytes",
                                      f"Elasticsearch caps ids at {MAX_ID_BYTES} bytes: shorten the ids")
        fingerprint = corpus_fingerprint(passages)
        client = self.connect()
        start = time.perf_counter()
        meta = self.index_meta()
        if meta is not None and self.recreate:
            log.info("retriever.recreate=true: deleting the index %s on %s", self.index_name, self.url)
            self.drop()
            meta = None
        if meta is None:
            self._create(client)
            self._bulk(client, passages, where, fingerprint)
        else:
            self._check_reuse(meta, fingerprint, len(passages), where)
            log.info("Reusing the index %s on %s (same settings and corpus, %d passages)", self.index_name,
                     self.url, len(passages))
        self.passage_ids = [p.id for p in passages]
        self.n_passages = len(passages)
        self.corpus_fingerprint = fingerprint
        self.tokenize_seconds = 0.0  # nori runs on the server, inside the bulk indexing time
        self.index_seconds = time.perf_counter() - start
        return self

    def _check_reuse(self, meta: Mapping[str, Any], fingerprint: str, n: int, where: str) -> None:
        fix = "set retriever.recreate=true to delete and rebuild it, or use another retriever.index_name"
        here = f"the Elasticsearch index {self.index_name!r} on {self.url}"
        if not meta:
            raise ValueError(f"{here} exists but was not created by this framework (no _meta.{META_KEY}): "
                             f"{fix}.")
        if meta.get("settings_hash") != self.settings_hash:
            diff = _differences(meta.get("config", {}), self.index_config(), "config")
            raise ValueError(f"{here} was built with other settings ({diff or 'the settings hash differs'}): "
                             f"{fix}.")
        if not meta.get("complete"):
            raise ValueError(f"{here} is an interrupted build (bulk indexing never finished): {fix}.")
        if meta.get("corpus_fingerprint") != fingerprint:
            raise ValueError(f"{here} holds another corpus ({meta.get('passages')} passages, fingerprint "
                             f"{meta.get('corpus_fingerprint')}) than {where} ({n} passages, fingerprint "
                             f"{fingerprint}): {fix}.")

    def _create(self, client: Any) -> None:
        es = _import_client()
        self._check_nori(client)
        body = self.index_body()
        mappings = {**body["mappings"], "_meta": self._meta(complete=False, fingerprint=None, passages=0)}
        try:
            client.indices.create(index=self.index_name, settings=body["settings"], mappings=mappings)
        except es.BadRequestError as error:
            reason = _reason(error)
            fix = _NORI_FIX if "nori" in reason else "check retriever.analyzer / retriever.similarity"
            raise ValueError(f"Elasticsearch refused to create the index {self.index_name!r} ({reason}): "
                             f"{fix}.") from None
        log.info("Created the index %s on %s (nori decompound_mode=%s, BM25 k1=%s b=%s)", self.index_name,
                 self.url, self.tokenizer.config["decompound_mode"], self.k1, self.b)

    def _bulk(self, client: Any, passages: Sequence[Passage], where: str, fingerprint: str) -> None:
        es = _import_client()
        from elasticsearch import helpers

        actions = ({"_index": self.index_name, "_id": p.id, "_source": {TEXT_FIELD: self.passage_text(p),
                                                                        ORDER_FIELD: i}}
                   for i, p in enumerate(passages))
        failed: list[tuple[str, str]] = []
        n_failed = 0
        start = time.perf_counter()
        client.indices.put_settings(index=self.index_name, settings={"refresh_interval": "-1"})
        try:
            for ok, item in helpers.streaming_bulk(client, actions, chunk_size=self.bulk_chunk_size,
                                                   raise_on_error=False, max_retries=3, yield_ok=False):
                if not ok:
                    n_failed += 1
                    result = next(iter(item.values()))
                    if len(failed) < 3:
                        failed.append((str(result.get("_id")), _reason_of(result.get("error"))))
        except es.TransportError as error:
            raise ValueError(f"lost Elasticsearch at {self.url} while indexing {where} ({error}); run again "
                             "with retriever.recreate=true.") from None
        client.indices.put_settings(index=self.index_name,
                                    settings={"refresh_interval": self.refresh_interval})
        if n_failed:
            shown = "; ".join(f"{pid}: {why}" for pid, why in failed)
            raise ValueError(f"{where}: Elasticsearch rejected {n_failed} of {len(passages)} passages "
                             f"(e.g. {shown}); fix them and run again with retriever.recreate=true.")
        client.indices.refresh(index=self.index_name)
        count = int(client.count(index=self.index_name)["count"])
        if count != len(passages):
            raise ValueError(f"the index {self.index_name!r} holds {count} documents after indexing "
                             f"{len(passages)} passages of {where}; run again with retriever.recreate=true.")
        meta = self._meta(complete=True, fingerprint=fingerprint, passages=len(passages))
        client.indices.put_mapping(index=self.index_name, meta=meta)
        seconds = time.perf_counter() - start
        log.info("Indexed %d passages into %s in %.1fs (%.0f passages/s)", len(passages), self.index_name,
                 seconds, len(passages) / max(seconds, 1e-9))

    def index_tokens(self, passages: Sequence[Passage], tokens: Any, *, source: str | None = None) -> Any:
        raise NotImplementedError(_SERVER_SIDE)

    # ------------------------------------------------------------------ searching

    def _check_k(self, k: int) -> None:
        if not self.is_indexed:
            raise RuntimeError("ElasticsearchRetriever.search: nothing indexed yet; call index(passages) or "
                               "load().")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        deepest = min(self.n_passages, MAX_RESULT_WINDOW)
        if k > deepest:
            raise ValueError(f"k={k} is larger than the corpus ({self.n_passages} passages) or Elasticsearch's "
                             f"max_result_window ({MAX_RESULT_WINDOW}): set retriever.top_k (or k) to at "
                             f"most {deepest}.")

    def search(self, queries: Sequence[str], k: int = 20) -> SearchResult:
        """Top-``k`` passages per query (best first, ties in corpus order); one msearch per batch."""
        if isinstance(queries, str):
            raise ValueError("search() takes a list of queries; wrap a single query as [query].")
        self._check_k(k)
        es = _import_client()
        client = self.connect()
        ids_out: list[list[str]] = []
        scores_out: list[list[float]] = []
        options = {"search_type": self.search_type, "max_concurrent_searches": self.max_concurrent_searches}
        options = {key: value for key, value in options.items() if value is not None}
        for begin, batch in _batches(queries, self.msearch_batch_size):
            searches: list[Mapping[str, Any]] = []
            for query in batch:
                searches += [{}, self.query_body(str(query), int(k))]
            try:
                responses = client.msearch(index=self.index_name, searches=searches, **options)["responses"]
            except es.NotFoundError:
                raise ValueError(f"the Elasticsearch index {self.index_name!r} is gone from {self.url}: "
                                 "rebuild it (retriever.rebuild_index=true).") from None
            except es.TransportError as error:
                raise ValueError(f"lost Elasticsearch at {self.url} while searching ({error}).") from None
            for offset, response in enumerate(responses):
                if "error" in response:
                    raise RuntimeError(f"Elasticsearch failed query #{begin + offset} ({batch[offset]!r}): "
                                       f"{_reason_of(response['error'])}")
                hits = response["hits"]["hits"]
                ids_out.append([hit["_id"] for hit in hits])
                scores_out.append([float(hit["sort"][0]) for hit in hits])
        empty = [i for i, ids in enumerate(ids_out) if not ids]
        if empty:
            log.warning("%d of %d queries share no analysed term with the index (e.g. %s): they get no "
                        "results", len(empty), len(ids_out), ", ".join(repr(queries[i]) for i in empty[:3]))
        return SearchResult(ids_out, scores_out)

    def search_tokens(self, token_lists: Any, k: int, *, queries: Any = None) -> SearchResult:
        raise NotImplementedError(_SERVER_SIDE)

    def get_scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        raise NotImplementedError(_SERVER_SIDE)

    # ------------------------------------------------------------------ persistence

    def manifest(self) -> dict[str, Any]:
        manifest = super().manifest()
        manifest.pop("vocab_size", None)
        versions = {"elasticsearch": self.server_version} if self.server_version else {}
        manifest["tokenizer"]["versions"] = versions
        manifest["corpus"]["passages"] = self.n_passages
        manifest["elasticsearch"] = {
            "url": self.url, "index": self.index_name, "settings_hash": self.settings_hash,
            "server_version": self.server_version, "config": self.constructor_config(),
        }
        return manifest

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``manifest.json`` pointing at the server index (the index itself stays on the server)."""
        if not self.is_indexed:
            raise RuntimeError("ElasticsearchRetriever.save: nothing indexed yet.")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(out / "manifest.json", json.dumps(self.manifest(), ensure_ascii=False, indent=2))
        return out

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        passages: Sequence[Passage] | None = None,
        tokenizer: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        index_title: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        engine: str = "auto",
        url: str | None = None,
    ) -> ElasticsearchRetriever:
        """Attach to the index a manifest points at, after checking it against ``passages`` / ``tokenizer`` /
        ``params`` and checking the server index against the manifest.  The server is ``url``, else
        ``$ES_URL``, else the manifest's URL."""
        src = Path(directory)
        manifest = read_manifest(src)
        check_es_manifest(src, manifest, passages=passages, tokenizer=tokenizer, params=params,
                          index_title=index_title)
        es_part = manifest["elasticsearch"]
        # url=None reads $ES_URL (which may carry credentials: the environment's business)
        url = url or (None if os.environ.get("ES_URL") else es_part["url"])
        retriever = cls(url=url, cache_dir=cache_dir, engine=engine, **es_part["config"])
        if retriever.settings_hash != es_part["settings_hash"]:
            raise DataFormatError(src / "manifest.json", None, "settings_hash does not match the settings",
                                  "it was edited: rebuild it (retriever.rebuild_index=true)")
        meta = retriever.index_meta()
        where = f"the Elasticsearch index {retriever.index_name!r} on {retriever.url}"
        rebuild = "rebuild it: retriever.rebuild_index=true retriever.recreate=true"
        if meta is None:
            raise DataFormatError(src, None, f"{where} does not exist (any more)", rebuild)
        built = manifest["corpus"]
        if (meta.get("settings_hash") != es_part["settings_hash"] or not meta.get("complete")
                or meta.get("corpus_fingerprint") != built["fingerprint"]):
            raise DataFormatError(
                src, None,
                f"{where} no longer matches this manifest (index: settings {meta.get('settings_hash')}, "
                f"corpus {meta.get('corpus_fingerprint')}, complete={meta.get('complete')}; manifest: "
                f"settings {es_part['settings_hash']}, corpus {built['fingerprint']})", rebuild,
            )
        retriever.n_passages = int(built["passages"])
        retriever.corpus_fingerprint = built["fingerprint"]
        if passages is not None:
            retriever.passage_ids = [p.id for p in passages]
        return retriever

    # The in-memory hooks of the sparse retrievers have no meaning here: the index lives on the server.

    def _build(self, corpus: TokenizedCorpus) -> None:
        raise NotImplementedError(_SERVER_SIDE)

    def _score(self, terms: np.ndarray, counts: np.ndarray) -> np.ndarray:
        raise NotImplementedError(_SERVER_SIDE)

    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError(_SERVER_SIDE)

    def _restore(self, arrays: Mapping[str, np.ndarray], directory: Path) -> None:
        raise NotImplementedError(_SERVER_SIDE)


def check_es_manifest(
    src: Path,
    manifest: Mapping[str, Any],
    *,
    passages: Sequence[Passage] | None = None,
    tokenizer: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    index_title: bool | None = None,
) -> None:
    """Raise :class:`DataFormatError` when the manifest is not an Elasticsearch one, or was built from another
    corpus, analyzer, parameters or ``index_title`` than asked for (no server needed)."""
    fix = "set retriever.rebuild_index=true to rebuild (and retriever.recreate=true to replace the server's)"
    if manifest.get("retriever") != ElasticsearchRetriever.kind:
        kind = manifest.get("retriever")
        raise DataFormatError(src, None, f"this is a {kind} index, not an elasticsearch one",
                              f"load it with retriever={kind}, or {fix}")
    es_part = manifest.get("elasticsearch")
    if not isinstance(es_part, Mapping) or not {"url", "index", "settings_hash", "config"} <= set(es_part):
        raise DataFormatError(src / "manifest.json", None, "no complete 'elasticsearch' section (url, index, "
                              "settings_hash, config)", fix)
    built = manifest["corpus"]
    if passages is not None:
        have = corpus_fingerprint(passages)
        if have != built["fingerprint"]:
            raise DataFormatError(
                src, None,
                f"the index was built from a different corpus ({built['passages']} passages, fingerprint "
                f"{built['fingerprint']}) than the one given ({len(passages)} passages, fingerprint {have})",
                fix,
            )
    if tokenizer is not None:
        wanted = NoriAnalyzer({k: v for k, v in dict(tokenizer).items() if k != "name"}).config
        if wanted != manifest["tokenizer"]["config"]:
            diff = _differences(manifest["tokenizer"]["config"], wanted, "asked")
            raise DataFormatError(src, None, f"the index was built with another nori analyzer ({diff})",
                                  f"set retriever.analyzer to the index's, or {fix}")
    if params is not None:
        have_params = manifest["params"]
        diff = {k: (have_params.get(k), v) for k, v in params.items() if have_params.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: index {a!r} vs asked {b!r}" for k, (a, b) in diff.items())
            raise DataFormatError(src, None, f"the index was built with other parameters ({shown})",
                                  f"set them to the index's, or {fix}")
    if index_title is not None and bool(manifest.get("index_title", True)) != bool(index_title):
        built_title = manifest.get("index_title")
        raise DataFormatError(src, None, f"the index was built with index_title={built_title}",
                              f"set retriever.index_title to match, or {fix}")


def _differences(built: Mapping[str, Any], wanted: Mapping[str, Any], label: str) -> str:
    """``key: index X vs <label> Y`` for every (nested) key whose values differ."""
    have, want = _flatten(built), _flatten(wanted)
    return ", ".join(f"{k}: index {have.get(k)!r} vs {label} {want.get(k)!r}"
                     for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k))


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _reason_of(error: Any) -> str:
    if isinstance(error, Mapping):
        cause = (error.get("root_cause") or [error])[0]
        if isinstance(cause, Mapping):
            return str(cause.get("reason") or cause.get("type") or error)
    return str(error)


def _batches(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    for begin in range(0, len(items), size):
        yield begin, items[begin : begin + size]

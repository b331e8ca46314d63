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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataFormatError
from retrievals.corpus import Passage, corpus_fingerprint
from retrievals.es_settings import (
    _INDEX_NAME,
    _NORI_FIX,
    ANALYZER,
    ANALYZER_DEFAULTS,
    MAPPINGS,
    MAX_ID_BYTES,
    MAX_RESULT_WINDOW,
    META_KEY,
    META_VERSION,
    ORDER_FIELD,
    SIMILARITY,
    SIMILARITY_DEFAULTS,
    TEXT_FIELD,
    NoriAnalyzer,
    _import_client,
    _reason,
    _reason_of,
    batches,
    check_es_manifest,
    check_nori,
    check_reuse,
    connection_settings,
    match_query,
    open_client,
)
from retrievals.manifest import manifest_header, read_manifest, write_manifest
from retrievals.protocol import SearchResult, check_passages, check_queries

__all__ = ["ANALYZER_DEFAULTS", "ElasticsearchRetriever", "NoriAnalyzer", "connection_settings"]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the retriever


class ElasticsearchRetriever:
    """BM25 with the nori analyzer on an Elasticsearch 8.x server (see the module docstring); implements the
    :class:`~retrievals.protocol.Retriever` protocol directly: nothing is tokenised or scored locally."""

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
    ) -> None:
        self.tokenizer = NoriAnalyzer(analyzer)  # what the server's analyzer is (analysis runs there)
        self.index_title = bool(index_title)
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
        self.passage_ids: list[str] = []
        self.corpus_fingerprint: str | None = None
        self.index_seconds: float | None = None
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
            "mappings": MAPPINGS,
        }

    def query_body(self, query: str, k: int) -> dict[str, Any]:
        """One search of ``msearch``: BM25 match on the passage text, best first, ties in corpus order."""
        return match_query(query, k)

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
        if self._client is None:
            self._client, self.server_version = open_client(
                self.url, self._auth, request_timeout=self.request_timeout, verify_certs=self.verify_certs,
                ca_certs=self.ca_certs,
            )
        return self._client

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
        check_passages(passages, where)
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
            here = f"the Elasticsearch index {self.index_name!r} on {self.url}"
            check_reuse(meta, self.index_config(), self.settings_hash, here, fingerprint, len(passages), where)
            log.info("Reusing the index %s on %s (same settings and corpus, %d passages)", self.index_name,
                     self.url, len(passages))
        self.passage_ids = [p.id for p in passages]
        self.n_passages = len(passages)
        self.corpus_fingerprint = fingerprint
        self.index_seconds = time.perf_counter() - start
        return self

    def _create(self, client: Any) -> None:
        es = _import_client()
        check_nori(client, self.url)
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
        check_queries(queries)
        self._check_k(k)
        es = _import_client()
        client = self.connect()
        ids_out: list[list[str]] = []
        scores_out: list[list[float]] = []
        options = {"search_type": self.search_type, "max_concurrent_searches": self.max_concurrent_searches}
        options = {key: value for key, value in options.items() if value is not None}
        for begin, batch in batches(queries, self.msearch_batch_size):
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

    # ------------------------------------------------------------------ persistence

    def passage_text(self, passage: Passage) -> str:
        return f"{passage.title}\n{passage.text}" if self.index_title and passage.title else passage.text

    def report(self) -> dict[str, Any]:
        """nori runs on the server, inside the bulk indexing time: no separate tokenising time."""
        return {"tokenizer": self.tokenizer.name, "tokenize_seconds": 0.0, "build_seconds": self.index_seconds}

    def manifest(self) -> dict[str, Any]:
        versions = {"elasticsearch": self.server_version} if self.server_version else {}
        return {
            **manifest_header(self, fingerprint=self.corpus_fingerprint, passages=self.n_passages),
            "index_title": self.index_title,
            "tokenizer": {"config": self.tokenizer.config, "fingerprint": self.tokenizer.fingerprint(),
                          "versions": versions},
            "elasticsearch": {
                "url": self.url, "index": self.index_name, "settings_hash": self.settings_hash,
                "server_version": self.server_version, "config": self.constructor_config(),
            },
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``manifest.json`` pointing at the server index (the index itself stays on the server)."""
        if not self.is_indexed:
            raise RuntimeError("ElasticsearchRetriever.save: nothing indexed yet.")
        return write_manifest(directory, self.manifest())

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        passages: Sequence[Passage] | None = None,
        like: ElasticsearchRetriever | None = None,
        tokenizer: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        index_title: bool | None = None,
        url: str | None = None,
    ) -> ElasticsearchRetriever:
        """Attach to the index a manifest points at, after checking it against ``passages`` / ``tokenizer`` /
        ``params`` / ``index_title`` (each defaults to ``like``'s) and checking the server index against the
        manifest. The server is ``url``, else ``$ES_URL``, else the manifest's URL."""
        src = Path(directory)
        manifest = read_manifest(src)
        if like is not None:
            tokenizer = like.tokenizer.config if tokenizer is None else tokenizer
            params = like.params() if params is None else params
            index_title = like.index_title if index_title is None else index_title
        check_es_manifest(src, manifest, cls, passages=passages, tokenizer=tokenizer, params=params,
                          index_title=index_title)
        es_part = manifest["elasticsearch"]
        # url=None reads $ES_URL (which may carry credentials: the environment's business)
        url = url or (None if os.environ.get("ES_URL") else es_part["url"])
        retriever = cls(url=url, **es_part["config"])
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

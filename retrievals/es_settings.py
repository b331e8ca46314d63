"""Elasticsearch settings that need no server: the connection (URL, credentials from the environment), the nori
analyzer the index is created with, and the manifest checks of a saved index (``retrievals/elasticsearch.py``
uses them; the ``elasticsearch`` client is imported only when a server is contacted).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from core.errors import DataFormatError
from retrievals.corpus import Passage
from retrievals.manifest import check_corpus, check_params, check_setting, check_target

__all__ = ["ANALYZER_DEFAULTS", "NoriAnalyzer", "check_es_manifest", "connection_settings"]

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


# ----------------------------------------------------------------------------- manifest checks


def check_es_manifest(
    src: Path,
    manifest: Mapping[str, Any],
    cls: type,
    *,
    passages: Sequence[Passage] | None = None,
    tokenizer: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    index_title: bool | None = None,
) -> None:
    """Raise :class:`DataFormatError` when the manifest is not one of ``cls`` (an Elasticsearch retriever), or
    was built from another corpus, analyzer, parameters or ``index_title`` than asked for (no server needed)."""
    fix = "set retriever.rebuild_index=true to rebuild (and retriever.recreate=true to replace the server's)"
    check_target(src, manifest, cls, fix)
    es_part = manifest.get("elasticsearch")
    if not isinstance(es_part, Mapping) or not {"url", "index", "settings_hash", "config"} <= set(es_part):
        raise DataFormatError(src / "manifest.json", None, "no complete 'elasticsearch' section (url, index, "
                              "settings_hash, config)", fix)
    check_corpus(src, manifest, passages, fix)
    if tokenizer is not None:
        wanted = NoriAnalyzer({k: v for k, v in dict(tokenizer).items() if k != "name"}).config
        if wanted != manifest["tokenizer"]["config"]:
            diff = _differences(manifest["tokenizer"]["config"], wanted, "asked")
            raise DataFormatError(src, None, f"the index was built with another nori analyzer ({diff})",
                                  f"set retriever.analyzer to the index's, or {fix}")
    check_params(src, manifest, params, fix)
    check_setting(src, manifest, "index_title", None if index_title is None else bool(index_title), fix, default=True)


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




# ----------------------------------------------------------------------------- the server


MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        TEXT_FIELD: {"type": "text", "analyzer": ANALYZER, "similarity": SIMILARITY},
        ORDER_FIELD: {"type": "integer"},
    },
}


def match_query(query: str, k: int) -> dict[str, Any]:
    """One search of ``msearch``: BM25 match on the passage text, best first, ties in corpus order."""
    return {
        "query": {"match": {TEXT_FIELD: {"query": query}}},
        "size": k,
        "_source": False,
        "track_total_hits": False,
        "sort": [{"_score": {"order": "desc"}}, {ORDER_FIELD: {"order": "asc"}}],
    }


def open_client(url: str, auth: Mapping[str, Any], *, request_timeout: float, verify_certs: bool,
                ca_certs: str | None) -> tuple[Any, str]:
    """A client of the server at ``url`` and the server's version, after checking that it answers (clear
    errors for URL, auth and version)."""
    es = _import_client()
    kwargs: dict[str, Any] = {"request_timeout": request_timeout, "verify_certs": verify_certs,
                              "retry_on_timeout": True, "max_retries": 2, **auth}
    if ca_certs:
        kwargs["ca_certs"] = str(ca_certs)
    client = es.Elasticsearch(url, **kwargs)
    try:
        info = client.info()
    except es.AuthenticationException:
        raise ValueError(f"Elasticsearch at {url} refused the credentials (401): set ES_API_KEY, or "
                         "ES_USERNAME and ES_PASSWORD, in the environment.") from None
    except es.UnsupportedProductError as error:
        raise ValueError(f"{url} is not an Elasticsearch 8.x server ({error}); point ES_URL at one.") from None
    except es.ApiError as error:
        status = error.meta.status
        raise ValueError(f"Elasticsearch at {url} answered {status}: {_reason(error)}.") from None
    except es.TransportError as error:
        raise ValueError(
            f"cannot reach Elasticsearch at {url} ({type(error).__name__}: {error}): start a server "
            "(with the analysis-nori plugin) and set ES_URL to it, e.g. ES_URL=http://localhost:9200."
        ) from None
    version = str(info["version"]["number"])
    if int(version.split(".")[0]) < 8:
        raise ValueError(f"Elasticsearch at {url} is {version}; this client needs 8.x or newer.")
    return client, version


def check_nori(client: Any, url: str) -> None:
    """The server has the analysis-nori plugin (else: how to install it)."""
    es = _import_client()
    try:
        client.indices.analyze(tokenizer="nori_tokenizer", text="한국어 형태소 분석")
    except es.BadRequestError as error:
        raise ValueError(f"Elasticsearch at {url} has no nori analyzer ({_reason(error)}): {_NORI_FIX}.") from None


def check_reuse(meta: Mapping[str, Any], config: Mapping[str, Any], settings_hash: str, here: str,
                fingerprint: str, n: int, where: str) -> None:
    """An existing server index is reused only when this framework built it, completely, with the same
    settings (``config`` / ``settings_hash``) from the same corpus."""
    fix = "set retriever.recreate=true to delete and rebuild it, or use another retriever.index_name"
    if not meta:
        raise ValueError(f"{here} exists but was not created by this framework (no _meta.{META_KEY}): {fix}.")
    if meta.get("settings_hash") != settings_hash:
        diff = _differences(meta.get("config", {}), config, "config")
        raise ValueError(f"{here} was built with other settings ({diff or 'the settings hash differs'}): {fix}.")
    if not meta.get("complete"):
        raise ValueError(f"{here} is an interrupted build (bulk indexing never finished): {fix}.")
    if meta.get("corpus_fingerprint") != fingerprint:
        raise ValueError(f"{here} holds another corpus ({meta.get('passages')} passages, fingerprint "
                         f"{meta.get('corpus_fingerprint')}) than {where} ({n} passages, fingerprint "
                         f"{fingerprint}): {fix}.")


def batches(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """``(offset, items[offset:offset + size])`` for each batch (one msearch request each)."""
    for begin in range(0, len(items), size):
        yield begin, items[begin : begin + size]

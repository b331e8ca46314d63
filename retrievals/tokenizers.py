"""Korean tokenisers for sparse retrieval and their combinations.

``retriever.tokenizer`` is either a name or a mapping with ``name`` plus options::

    retriever.tokenizer=kiwi                      # content morphemes (kiwipiepy)
    retriever.tokenizer.name=kiwi+char_ngram      # both token streams, kept apart by a prefix
    retriever.tokenizer.ngram_max=3

Parallelism: Kiwi runs ``num_workers`` native threads (0: one per core, up to 4) and HF tokenizers use
their Rust thread pool; the pure-Python ``whitespace`` / ``char_ngram`` run in ``num_workers`` processes
only when it is 2 or more and the corpus has 20k+ texts (results identical to one process).

Names: ``whitespace`` (words with surrounding punctuation stripped), ``char_ngram`` (character n-grams
inside each word; a word shorter than ``ngram_min`` is kept whole), ``kiwi`` (kiwipiepy morphemes whose
tag is in ``kiwi_tags``), ``hf`` (an HF subword tokenizer: ``hf_name_or_path``, or when null a WordPiece
vocabulary trained on the corpus being indexed).  Text is NFC-normalised (and lower-cased when
``lowercase``) before every tokenizer.

Tokenised corpora and their on-disk cache are in ``retrievals/token_cache.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.cache import build_once
from core.errors import DataFormatError
from core.files import write_text_atomic
from retrievals.manifest import REBUILD_FIX

__all__ = [
    "CONTENT_KIWI_TAGS",
    "DEFAULT_KIWI_TAGS",
    "TOKENIZER_NAMES",
    "Tokenizer",
    "build_tokenizer",
    "check_index_tokenizer",
]

log = logging.getLogger(__name__)

TOKENIZER_NAMES = ("whitespace", "char_ngram", "kiwi", "hf")
# Content morphemes kept by default: nouns, pronouns, numerals, foreign words, hanja and numbers.  Particles
# (J*), endings (E*), affixes (X*), punctuation and, unlike CONTENT_KIWI_TAGS, verb / adjective stems and
# adverbs are dropped: with char bigrams beside them, nouns alone scored best (bench/retrieval_tokenizers.py).
DEFAULT_KIWI_TAGS = ("NNG", "NNP", "NNB", "NR", "NP", "SL", "SH", "SN")
CONTENT_KIWI_TAGS = ("NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "XR", "MAG", "SL", "SH", "SN")
# The default (kiwi nouns + character bigrams) had the best mean recall@1 over the embedded QA set and a
# real-Korean proxy (KLUE-NLI hypothesis -> premise); see docs/retrieval.md.
DEFAULTS: dict[str, Any] = {
    "name": "kiwi+char_ngram",
    "lowercase": True,
    "ngram_min": 2,
    "ngram_max": 2,
    "kiwi_tags": list(DEFAULT_KIWI_TAGS),
    # Kiwi's multi-word dictionary: ~190 MB of RSS and ~1.5 s of loading, and the same recall@1/5/20 to three
    # decimals on both sets of bench/retrieval_tokenizers.py: off unless asked for
    "kiwi_multi_dict": False,
    "hf_name_or_path": None,
    "hf_vocab_size": 8000,
    "num_workers": 0,
}
_PREFIX = {"whitespace": "w:", "char_ngram": "c:", "kiwi": "m:", "hf": "h:"}
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")


def _workers(requested: int) -> int:
    """Kiwi threads: ``num_workers``, or with 0 as many as there are cores, up to 4."""
    return requested if requested > 0 else max(1, min(4, os.cpu_count() or 1))


def _normalise(text: str, lowercase: bool) -> str:
    text = unicodedata.normalize("NFC", text)
    return text.lower() if lowercase else text


def _words(text: str) -> list[str]:
    out = []
    for raw in text.split():
        word = _EDGE_PUNCT.sub("", raw)
        if word:
            out.append(word)
    return out


def _char_ngrams(text: str, n_min: int, n_max: int) -> list[str]:
    out: list[str] = []
    for word in _words(text):
        size = len(word)
        if size < n_min:
            out.append(word)
            continue
        for n in range(n_min, min(n_max, size) + 1):
            out.extend(word[i : i + n] for i in range(size - n + 1))
    return out


def _python_chunk(args: tuple[str, list[str], bool, int, int]) -> list[list[str]]:
    """Worker for the pure-Python tokenisers (module level so a process pool can run it)."""
    name, texts, lowercase, n_min, n_max = args
    if name == "whitespace":
        return [_words(_normalise(t, lowercase)) for t in texts]
    return [_char_ngrams(_normalise(t, lowercase), n_min, n_max) for t in texts]


class Tokenizer:
    """Text -> list of string tokens.  ``config`` (JSON) fully describes it; ``fingerprint`` hashes it."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        cfg = {**DEFAULTS, **dict(config)}
        names = [n.strip() for n in str(cfg["name"]).split("+") if n.strip()]
        unknown = [n for n in names if n not in TOKENIZER_NAMES]
        if not names or unknown:
            raise ValueError(
                f"retriever.tokenizer.name={cfg['name']!r}: unknown tokenizer {unknown or names}; use one of "
                f"{', '.join(TOKENIZER_NAMES)} or several joined with '+' (e.g. kiwi+char_ngram)."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"retriever.tokenizer.name={cfg['name']!r} names a tokenizer twice.")
        n_min, n_max = int(cfg["ngram_min"]), int(cfg["ngram_max"])
        if not 1 <= n_min <= n_max:
            raise ValueError(
                f"retriever.tokenizer: need 1 <= ngram_min <= ngram_max, got {n_min} and {n_max}."
            )
        cfg["kiwi_tags"] = sorted({str(t) for t in cfg["kiwi_tags"]})
        if "kiwi" in names and not cfg["kiwi_tags"]:
            raise ValueError(
                "retriever.tokenizer.kiwi_tags is empty: list the Kiwi tags to keep (e.g. NNG, NNP)."
            )
        self.names = names
        # Only the options a component uses enter the fingerprint, so a change elsewhere keeps the cache.
        used = {"name": "+".join(names), "lowercase": bool(cfg["lowercase"])}
        if "char_ngram" in names:
            used.update(ngram_min=n_min, ngram_max=n_max)
        if "kiwi" in names:
            used["kiwi_tags"] = cfg["kiwi_tags"]
            if not cfg["kiwi_multi_dict"]:  # absent: loaded, as every index built before the option was
                used["kiwi_multi_dict"] = False
        if "hf" in names:
            used.update(hf_name_or_path=cfg["hf_name_or_path"], hf_vocab_size=int(cfg["hf_vocab_size"]))
        self._config = used
        self.num_workers = int(cfg["num_workers"])
        self._kiwi: Any = None
        self._hf: Any = None
        self._hf_json: str | None = None

    # ------------------------------------------------------------------ identity

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def name(self) -> str:
        return self._config["name"]

    def versions(self) -> dict[str, str]:
        out = {}
        if "kiwi" in self.names:
            import kiwipiepy

            out["kiwipiepy"] = kiwipiepy.__version__
        if "hf" in self.names and self._hf_json is not None:
            out["hf_tokenizer_sha256"] = hashlib.sha256(self._hf_json.encode()).hexdigest()[:16]
        return out

    def fingerprint(self) -> str:
        payload = json.dumps({"config": self._config, "versions": self.versions()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return json.dumps(self._config, ensure_ascii=False, sort_keys=True)

    # ------------------------------------------------------------------ stateful parts (hf)

    @property
    def needs_fit(self) -> bool:
        return "hf" in self.names and self._hf is None

    def fit(self, texts: Sequence[str], cache_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
        """Load (or train on ``texts``) the HF subword tokenizer; a no-op for the other tokenizers."""
        if "hf" not in self.names or self._hf is not None:
            return self
        source = self._config["hf_name_or_path"]
        if source:
            from transformers import AutoTokenizer

            try:
                fast = AutoTokenizer.from_pretrained(str(source))
            except OSError as error:
                raise ValueError(
                    f"retriever.tokenizer.hf_name_or_path={source!r} could not be loaded ({error}); give a local "
                    "tokenizer directory, or null to train a WordPiece vocabulary on the corpus."
                ) from None
            if not getattr(fast, "is_fast", False):
                raise ValueError(
                    f"retriever.tokenizer.hf_name_or_path={source!r} has no fast (Rust) tokenizer."
                )
            self._set_hf(fast.backend_tokenizer.to_str())
            return self
        vocab_size = int(self._config["hf_vocab_size"])
        key = hashlib.sha256(f"{vocab_size}\x00{self.config['lowercase']}".encode())
        for text in texts:
            key.update(text.encode("utf-8"))
            key.update(b"\x00")
        lowercase = bool(self._config["lowercase"])

        def train() -> str:
            # imports transformers: only when a vocabulary is trained
            from core.tokenizer_training import train_tokenizer

            start = time.perf_counter()
            trained = train_tokenizer((_normalise(t, lowercase) for t in texts), vocab_size=vocab_size)
            log.info(
                "Trained a %d-piece WordPiece vocabulary for retrieval in %.1fs",
                vocab_size,
                time.perf_counter() - start,
            )
            return trained.backend_tokenizer.to_str()

        if cache_dir is None:
            self._set_hf(train())
            return self
        cached = Path(cache_dir) / "retrieval" / "hf_tokenizers" / f"{key.hexdigest()[:20]}.json"

        def build() -> str:
            write_text_atomic(cached, train())
            return cached.read_text(encoding="utf-8")

        self._set_hf(build_once(cached, cached.exists, build, lambda: cached.read_text(encoding="utf-8")))
        return self

    def _set_hf(self, as_json: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._hf_json = as_json
        self._hf = HFTokenizer.from_str(as_json)
        self._hf.no_truncation()
        self._hf.no_padding()

    def state(self) -> dict[str, str]:
        """Files that :meth:`restore` needs besides ``config`` (the trained HF tokenizer)."""
        return {"hf_tokenizer.json": self._hf_json} if self._hf_json is not None else {}

    def restore(self, directory: Path) -> None:
        path = directory / "hf_tokenizer.json"
        if "hf" in self.names and path.exists():
            self._set_hf(path.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ tokenising

    def __call__(self, text: str) -> list[str]:
        return self.tokenize([text])[0]

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokenise a batch (parallel where it pays: Kiwi and HF use native threads)."""
        texts = list(texts)
        if self.needs_fit:
            raise RuntimeError("the hf tokenizer is not fitted: call Tokenizer.fit(corpus texts) first")
        parts = [self._component(name, texts) for name in self.names]
        if len(parts) == 1:
            return parts[0]
        out: list[list[str]] = [[] for _ in texts]
        for name, tokens in zip(self.names, parts, strict=True):
            prefix = _PREFIX[name]
            for row, toks in zip(out, tokens, strict=True):
                row.extend(prefix + t for t in toks)
        return out

    def _component(self, name: str, texts: list[str]) -> list[list[str]]:
        lowercase = bool(self._config["lowercase"])
        if name in ("whitespace", "char_ngram"):
            n_min = int(self._config.get("ngram_min", 2))
            n_max = int(self._config.get("ngram_max", 2))
            return _python_chunk((name, texts, lowercase, n_min, n_max))
        if name == "kiwi":
            return self._kiwi_tokens(texts, lowercase)
        encodings = self._hf.encode_batch([_normalise(t, lowercase) for t in texts], add_special_tokens=False)
        return [enc.tokens for enc in encodings]

    @property
    def python_only(self) -> bool:
        """Pure-Python tokenisers: parallel over processes (Kiwi and HF use their own native threads)."""
        return all(name in ("whitespace", "char_ngram") for name in self.names)

    def prepare(self) -> Tokenizer:
        """Load models now (Kiwi's takes ~1 s), so that query timings measure tokenising only."""
        if "kiwi" in self.names and self._kiwi is None:
            try:
                from kiwipiepy import Kiwi
            except ImportError:
                raise ValueError(
                    "retriever.tokenizer uses kiwi but kiwipiepy is not installed: pip install kiwipiepy "
                    "(its model ships in the kiwipiepy_model wheel), or pick another tokenizer."
                ) from None
            multi = bool(self._config.get("kiwi_multi_dict", True))
            self._kiwi = Kiwi(num_workers=_workers(self.num_workers), load_multi_dict=multi)
            self._kiwi.tokenize("가")  # the model finishes loading on first use (~1.5 s)
        return self

    def _kiwi_tokens(self, texts: list[str], lowercase: bool) -> list[list[str]]:
        self.prepare()
        keep = frozenset(self._config["kiwi_tags"])
        normalised = [_normalise(t, False) for t in texts]
        results = (
            self._kiwi.tokenize(normalised) if len(normalised) > 1 else [self._kiwi.tokenize(normalised[0])]
        )
        out = []
        for tokens in results:
            forms = [tok.form for tok in tokens if tok.tag.split("-", 1)[0] in keep]
            out.append([f.lower() for f in forms] if lowercase else forms)
        return out


def build_tokenizer(spec: str | Mapping[str, Any] | Tokenizer | None) -> Tokenizer:
    """A :class:`Tokenizer` from a name (``"kiwi"``), a mapping (``{"name": "char_ngram", ...}``) or None."""
    if isinstance(spec, Tokenizer):
        return spec
    if spec is None:
        return Tokenizer({})
    if isinstance(spec, str):
        return Tokenizer({"name": spec})
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(DEFAULTS))
        if unknown:
            raise ValueError(
                f"retriever.tokenizer has unknown option(s) {unknown}; known: {', '.join(DEFAULTS)}."
            )
        return Tokenizer(spec)
    raise ValueError(f"retriever.tokenizer must be a name or a mapping, got {type(spec).__name__}.")


def check_index_tokenizer(
    src: Path, built: Mapping[str, Any], tokenizer: str | Mapping[str, Any] | Tokenizer | None
) -> None:
    """Refuse an index tokenised otherwise than ``tokenizer`` (``built``: the manifest's tokenizer entry); warn
    when the tokenizer library changed since."""
    if tokenizer is not None:
        wanted = build_tokenizer(tokenizer).config
        if wanted != built["config"]:
            raise DataFormatError(
                src,
                None,
                f"the index was built with tokenizer {json.dumps(built['config'], ensure_ascii=False, sort_keys=True)}"
                f" but {json.dumps(wanted, ensure_ascii=False, sort_keys=True)} was asked for",
                f"set retriever.tokenizer to the index's, or {REBUILD_FIX}",
            )
    built_versions = built.get("versions", {})
    now_versions = build_tokenizer(built["config"]).versions()
    changed = {
        k: (built_versions[k], v)
        for k, v in now_versions.items()
        if k in built_versions and built_versions[k] != v
    }
    if changed:
        log.warning(
            "%s was tokenised with %s; now installed: %s. Tokens may differ slightly: rebuild the index if results look off",
            src,
            {k: a for k, (a, _) in changed.items()},
            {k: b for k, (_, b) in changed.items()},
        )

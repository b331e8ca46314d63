"""Dense retrieval (``retriever=dense``): a trained bi-encoder embeds questions and passages, FAISS finds the
passages with the highest inner product.

Why: in Korean open-domain QA contests (KLUE ODQA, the boostcamp MRC competition) a dense encoder trained on
the task's questions (``python main.py +experiment=dense_retriever``) beat BM25 on recall@k, and fusing the two
(``retriever=hybrid``) beat either. The encoder is a directory in the format of ``core/text_encoders.py``
(``<run>/retriever/``), or any transformers / sentence-transformers model.

Index types (``retriever.index``):

* ``flat``: ``faiss.IndexFlatIP``, exact inner product against every passage. Nothing to tune, exact scores;
  search cost grows linearly with the corpus (fine up to a few hundred thousand passages on CPU).
* ``hnsw``: ``faiss.IndexHNSWFlat`` (inner product), a navigable small-world graph: sub-linear search, at the
  price of a slower build (``hnsw_m`` links per node, ``hnsw_ef_construction``), more memory, and results that
  may miss a true neighbour (raise ``hnsw_ef_search``, search-time only, for recall over speed).

A saved index directory holds ``index.faiss`` (``faiss.write_index``), ``ids.json`` (passage ids, in index
order) and ``manifest.json`` (written last: class, ``params()`` with the encoder's fingerprint, corpus
fingerprint, encoder path, embedding size). No pickle. Loading refuses another corpus or another encoder.
``retriever.mmap: true`` reads ``index.faiss`` with ``faiss.IO_FLAG_MMAP``: a flat index's vectors are then
paged in from the file on demand (shared by processes through the page cache) instead of copied into RAM.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataFormatError
from core.files import write_text_atomic
from core.text_encoders import POOLINGS, LoadedEncoder, embed, load_dense_encoder
from retrievals.corpus import Passage, corpus_fingerprint
from retrievals.manifest import (
    REBUILD_FIX,
    check_corpus,
    check_params,
    check_target,
    manifest_header,
    read_manifest,
    write_manifest,
)
from retrievals.protocol import SearchResult, check_k, check_passages, check_queries

__all__ = ["DenseRetriever"]

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_ENCODER_FIX = (
    "point retriever.model_path at the encoder the index was built with, or set "
    "retriever.rebuild_index=true / delete the directory"
)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ValueError("retriever=dense needs faiss: pip install faiss-cpu (or faiss-gpu).") from None
    return faiss


def _positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r}: must be a positive integer.")


class DenseRetriever:
    """Passages embedded by a dense encoder in a FAISS index; see the module docstring."""

    kind = "dense"

    def __init__(
        self,
        model_path: str | None = None,
        index: str = "flat",
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 200,
        hnsw_ef_search: int = 128,
        pooling: str = "cls",
        index_title: bool = True,
        batch_size: int = 64,
        device: str = "auto",
        progress: bool = True,
        num_threads: int | None = None,
        mmap: bool = False,
        config_key: str = "retriever",
    ) -> None:
        # where these settings live in the config, for error messages (retriever=hybrid: retriever.dense)
        self.config_key = config_key
        if index not in INDEX_TYPES:
            raise ValueError(f"{config_key}.index={index!r}: choose one of {', '.join(INDEX_TYPES)}.")
        if pooling not in POOLINGS:
            raise ValueError(f"{config_key}.pooling={pooling!r}: choose one of {', '.join(POOLINGS)}.")
        for key, value in (
            ("hnsw_m", hnsw_m),
            ("hnsw_ef_construction", hnsw_ef_construction),
            ("hnsw_ef_search", hnsw_ef_search),
            ("batch_size", batch_size),
        ):
            _positive(f"{config_key}.{key}", value)
        if num_threads is not None:
            _positive("num_threads", num_threads)
        if not isinstance(device, str) or not _DEVICE.match(device):
            raise ValueError(f"{config_key}.device={device!r}: choose auto, cpu, cuda, cuda:<n> or mps.")
        self.model_path = str(model_path) if model_path else None
        self.index_type, self.hnsw_m, self.hnsw_ef_construction = index, hnsw_m, hnsw_ef_construction
        self.hnsw_ef_search, self.pooling, self.index_title = hnsw_ef_search, pooling, bool(index_title)
        self.batch_size, self.device, self.progress, self.num_threads = (
            batch_size,
            device,
            bool(progress),
            num_threads,
        )
        # a flat index read with faiss.IO_FLAG_MMAP: the vectors stay in the file (the page cache), not in RAM
        self.mmap = bool(mmap)
        if num_threads is not None:
            _faiss().omp_set_num_threads(num_threads)
        self.passage_ids: list[str] = []
        self.corpus_fingerprint: str | None = None
        self.faiss_index: Any = None
        self._loaded: LoadedEncoder | None = None
        self._seconds: dict[str, float] = {}

    def _config(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "index": self.index_type,
            "hnsw_m": self.hnsw_m,
            "hnsw_ef_construction": self.hnsw_ef_construction,
            "hnsw_ef_search": self.hnsw_ef_search,
            "pooling": self.pooling,
            "index_title": self.index_title,
            "batch_size": self.batch_size,
            "device": self.device,
            "progress": self.progress,
            "num_threads": self.num_threads,
            "mmap": self.mmap,
        }

    # ------------------------------------------------------------------ the encoder

    def _torch_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def encoder(self) -> LoadedEncoder:
        """The encoder, loaded on first use (a ``ValueError`` naming ``retriever.model_path`` when it cannot be)."""
        if self._loaded is None:
            self._loaded = load_dense_encoder(
                self.model_path or "",
                key=f"{self.config_key}.model_path",
                default_pooling=self.pooling,
                device=self._torch_device(),
            )
        return self._loaded

    def passage_text(self, passage: Passage) -> str:
        return f"{passage.title}\n{passage.text}" if self.index_title and passage.title else passage.text

    def _encode(self, texts: Sequence[str], *, passages: bool) -> np.ndarray:
        """Embeddings (float32, C-contiguous) of ``texts`` in order; batches of similar length cut padding."""
        import torch
        from tqdm.auto import tqdm

        enc = self.encoder()
        settings, model = enc.settings, enc.passage_model if passages else enc.query_model
        prefix = settings.passage_prefix if passages else settings.query_prefix
        max_length = settings.passage_max_length if passages else settings.query_max_length
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        device = next(model.parameters()).device
        out: np.ndarray | None = None
        starts = range(0, len(order), self.batch_size)
        with torch.inference_mode():
            for begin in tqdm(
                starts, desc="Encoding passages", unit="batch", disable=not (passages and self.progress)
            ):
                chunk = order[begin : begin + self.batch_size]
                inputs = enc.tokenizer(
                    [prefix + texts[i] for i in chunk],
                    truncation=True,
                    max_length=max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                vectors = embed(model, dict(inputs), settings).cpu().numpy()
                if out is None:
                    out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
                out[chunk] = vectors
        assert out is not None
        return np.ascontiguousarray(out, dtype=np.float32)

    # ------------------------------------------------------------------ indexing and search

    def _new_index(self, dim: int) -> Any:
        faiss = _faiss()
        if self.index_type == "flat":
            return faiss.IndexFlatIP(dim)
        index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.hnsw_ef_construction
        return index

    def index(self, passages: Sequence[Passage], *, source: str | None = None) -> DenseRetriever:
        """Embed ``passages`` with the passage encoder and build the FAISS index; returns ``self``."""
        check_passages(passages, source or "corpus")
        self.encoder()  # a bad model_path fails before anything is encoded
        start = time.perf_counter()
        vectors = self._encode([self.passage_text(p) for p in passages], passages=True)
        encoded = time.perf_counter()
        index = self._new_index(vectors.shape[1])
        index.add(vectors)
        self._seconds = {"encode_seconds": encoded - start, "build_seconds": time.perf_counter() - encoded}
        self.faiss_index, self.passage_ids = index, [p.id for p in passages]
        self.corpus_fingerprint = corpus_fingerprint(passages)
        log.info(
            "Indexed %d passages (dim %d, %s) in %.2fs encoding + %.2fs building",
            len(passages),
            vectors.shape[1],
            self.index_type,
            self._seconds["encode_seconds"],
            self._seconds["build_seconds"],
        )
        return self

    def search(self, queries: Sequence[str], k: int) -> SearchResult:
        """The top-``k`` passages of each query by inner product, best first (HNSW may return fewer)."""
        check_queries(queries)
        check_k(k, len(self.passage_ids), indexed=self.faiss_index is not None, name=type(self).__name__)
        if not queries:
            return SearchResult([], [])
        if self.index_type == "hnsw":
            self.faiss_index.hnsw.efSearch = max(self.hnsw_ef_search, int(k))
        scores, rows = self.faiss_index.search(self._encode(list(queries), passages=False), int(k))
        ids_out, scores_out = [], []
        for row_ids, row_scores in zip(rows.tolist(), scores.tolist(), strict=True):
            keep = [(i, s) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            ids_out.append([self.passage_ids[i] for i, _ in keep])
            scores_out.append([float(s) for _, s in keep])
        return SearchResult(ids_out, scores_out)

    # ------------------------------------------------------------------ description

    def params(self) -> dict[str, Any]:
        """What decides the index and its scores (not the encoder's path: a moved encoder still loads)."""
        enc = self.encoder()
        hnsw = self.index_type == "hnsw"
        return {
            "encoder_fingerprint": enc.fingerprint,
            "index": self.index_type,
            "hnsw_m": self.hnsw_m if hnsw else None,
            "hnsw_ef_construction": self.hnsw_ef_construction if hnsw else None,
            "index_title": self.index_title,
            "pooling": enc.settings.pooling,
            "normalize": bool(enc.settings.normalize),
        }

    def report(self) -> dict[str, Any]:
        """The encoder, embedding size, device, index type, and the seconds of the last :meth:`index`."""
        if self._loaded is None:
            return {}
        out = {
            "encoder": self.model_path,
            "encoder_fingerprint": self._loaded.fingerprint,
            "embedding_dim": None if self.faiss_index is None else int(self.faiss_index.d),
            "device": str(next(self._loaded.query_model.parameters()).device),
            "index": self.index_type,
            **self._seconds,
        }
        return {key: value for key, value in out.items() if value is not None}

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """``index.faiss``, ``ids.json``, then ``manifest.json`` (last) into ``directory``."""
        if self.faiss_index is None:
            raise RuntimeError("DenseRetriever.save: nothing indexed yet.")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").unlink(missing_ok=True)  # an interrupted save must not look complete
        tmp = out / "index.faiss.tmp"
        _faiss().write_index(self.faiss_index, str(tmp))
        os.replace(tmp, out / "index.faiss")
        write_text_atomic(out / "ids.json", json.dumps(self.passage_ids, ensure_ascii=False))
        path = Path(self.model_path or "")
        encoder = str(path.resolve()) if self.model_path and path.is_dir() else self.model_path
        return write_manifest(
            out,
            {
                **manifest_header(self, fingerprint=self.corpus_fingerprint, passages=len(self.passage_ids)),
                "encoder": encoder,
                "embedding_dim": int(self.faiss_index.d),
            },
        )

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        passages: Sequence[Passage] | None = None,
        like: DenseRetriever | None = None,
    ) -> DenseRetriever:
        """The index in ``directory``; refused (``DataFormatError``) when built from other ``passages``, with
        another encoder than ``like``'s (default: the manifest's ``encoder``) or other index settings. Device,
        batch size, ``hnsw_ef_search``, progress, threads and ``mmap`` come from ``like``."""
        src = Path(directory)
        manifest = read_manifest(src)
        check_target(src, manifest, cls)
        check_corpus(src, manifest, passages)
        if like is not None and not isinstance(like, DenseRetriever):
            raise TypeError(
                f"DenseRetriever.load(like=...) takes a DenseRetriever, got {type(like).__name__}."
            )
        built = manifest.get("params", {})
        if like is not None:
            retriever = cls(**like._config())
            retriever._loaded = like.encoder()
        else:
            hnsw = built.get("index") == "hnsw"
            retriever = cls(
                model_path=manifest.get("encoder"),
                index=built.get("index", "flat"),
                index_title=built.get("index_title", True),
                pooling=built.get("pooling", "cls"),
                **(
                    {"hnsw_m": built["hnsw_m"], "hnsw_ef_construction": built["hnsw_ef_construction"]}
                    if hnsw
                    else {}
                ),
            )
        have = retriever.encoder().fingerprint
        if have != built.get("encoder_fingerprint"):
            raise DataFormatError(
                src,
                None,
                f"built with encoder {built.get('encoder_fingerprint')} ({manifest.get('encoder')}), "
                f"not retriever.model_path={retriever.model_path} ({have})",
                _ENCODER_FIX,
            )
        check_params(src, manifest, retriever.params())
        try:
            ids = json.loads((src / "ids.json").read_text(encoding="utf-8"))
            faiss = _faiss()
            flags = faiss.IO_FLAG_MMAP if retriever.mmap else 0
            index = faiss.read_index(str(src / "index.faiss"), flags)
        except (OSError, ValueError, RuntimeError) as error:
            raise DataFormatError(
                src, None, f"the index files are unreadable ({error})", REBUILD_FIX
            ) from None
        if (
            not isinstance(ids, list)
            or index.ntotal != len(ids)
            or len(ids) != manifest["corpus"]["passages"]
        ):
            raise DataFormatError(
                src,
                None,
                f"index.faiss holds {index.ntotal} vectors, ids.json "
                f"{len(ids) if isinstance(ids, list) else 'no list of'} ids, manifest.json "
                f"{manifest['corpus']['passages']} passages",
                REBUILD_FIX,
            )
        if index.d != manifest.get("embedding_dim", index.d):
            raise DataFormatError(
                src,
                None,
                f"index.faiss has dimension {index.d}, manifest.json {manifest['embedding_dim']}",
                REBUILD_FIX,
            )
        retriever.faiss_index, retriever.passage_ids = index, [str(i) for i in ids]
        retriever.corpus_fingerprint = manifest["corpus"]["fingerprint"]
        return retriever

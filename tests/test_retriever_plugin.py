"""A retriever of the user's own, outside the project: its class in a module on PYTHONPATH, its option YAML in a
config directory of its own, run through ``python main.py --config-dir ... task=retrieve retriever=<name>``
with no change to the project (issue 18, item 5; docs/extending.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import SAMPLE, read_json, run_main

# The user's module: a character-bigram overlap scorer implementing retrievals.protocol.Retriever directly
# (no project base class), saving its index as JSON with the manifest helpers.
PLUGIN = '''
from __future__ import annotations

import json
from pathlib import Path

from retrievals.corpus import corpus_fingerprint
from retrievals.manifest import (
    check_corpus, check_params, check_target, manifest_header, read_manifest, write_manifest,
)
from retrievals.protocol import SearchResult, check_k, check_passages, check_queries


def bigrams(text):
    text = "".join(text.split())
    return {text[i : i + 2] for i in range(len(text) - 1)}


class CharOverlapRetriever:
    """Score: the share of the query's character bigrams found in the passage."""

    kind = "char_overlap"

    def __init__(self, lowercase: bool = True):
        self.lowercase = lowercase
        self.ids, self.grams, self.fingerprint = [], [], None
        self.built_from_index = False

    def _norm(self, text):
        return text.lower() if self.lowercase else text

    def params(self):
        return {"lowercase": self.lowercase}

    def report(self):
        return {"tokenizer": "char_bigrams"}

    def index(self, passages, *, source=None):
        check_passages(passages, source or "the corpus")
        self.ids = [p.id for p in passages]
        self.grams = [bigrams(self._norm(p.title + " " + p.text)) for p in passages]
        self.fingerprint = corpus_fingerprint(passages)
        return self

    def search(self, queries, k):
        check_queries(queries)
        check_k(k, len(self.ids), indexed=bool(self.ids), name=type(self).__name__)
        ids, scores = [], []
        for query in queries:
            q = bigrams(self._norm(query))
            scored = sorted(((len(q & g) / max(len(q), 1), -i) for i, g in enumerate(self.grams)), reverse=True)[:k]
            ids.append([self.ids[-i] for _, i in scored])
            scores.append([s for s, _ in scored])
        return SearchResult(ids, scores)

    def save(self, directory):
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "grams.json").write_text(json.dumps({"ids": self.ids, "grams": [sorted(g) for g in self.grams]}))
        manifest = manifest_header(self, fingerprint=self.fingerprint, passages=len(self.ids))
        return write_manifest(out, manifest)

    @classmethod
    def load(cls, directory, *, passages=None, like=None):
        src = Path(directory)
        manifest = read_manifest(src)
        check_target(src, manifest, cls)
        check_corpus(src, manifest, passages)
        check_params(src, manifest, None if like is None else like.params())
        retriever = cls(**manifest["params"])
        stored = json.loads((src / "grams.json").read_text())
        retriever.ids, retriever.grams = stored["ids"], [set(g) for g in stored["grams"]]
        retriever.fingerprint = manifest["corpus"]["fingerprint"]
        retriever.built_from_index = True
        return retriever


class NotARetriever:
    def search(self, queries, k):
        return None
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the user's module directory, the user's config directory)."""
    base = tmp_path_factory.mktemp("plugin")
    code, conf = base / "code", base / "my_conf" / "retriever"
    code.mkdir()
    conf.mkdir(parents=True)
    (code / "my_retrievers.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    (conf / "char_overlap.yaml").write_text("_target_: my_retrievers.CharOverlapRetriever\nlowercase: true\n",
                                            encoding="utf-8")
    (conf / "broken.yaml").write_text("_target_: my_retrievers.NotARetriever\n", encoding="utf-8")
    return code, base / "my_conf"


def run_plugin(plugin: tuple[Path, Path], run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    code, conf = plugin
    path = os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p)
    return run_main(f"--config-dir={conf}", "task=retrieve", "print_config=false",
                    f"datamodule.validation_file={SAMPLE / 'validation.json'}", *overrides, run_dir=run_dir,
                    check=False, env={"PYTHONPATH": path})


def test_own_retriever_runs_task_retrieve_and_reloads_its_index(plugin: tuple[Path, Path], tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    overrides = ("retriever=char_overlap", "retriever.top_k=5", f"retriever.index_dir={index_dir}")
    first = run_plugin(plugin, tmp_path / "first", *overrides)
    assert first.returncode == 0, first.stderr[-3000:]
    retrieved = read_json(tmp_path / "first" / "retrieved.json")
    assert len(retrieved) == 459 and all(len(hits) == 5 for hits in retrieved.values())
    metrics = read_json(tmp_path / "first" / "retrieval_metrics.json")
    assert (metrics["retriever"], metrics["tokenizer"], metrics["lowercase"]) == ("char_overlap", "char_bigrams", True)
    assert metrics["passages"] == 135 and metrics["index_loaded"] is False  # the validation contexts
    assert metrics["recall@20"] >= 0.9 and metrics["recall@1"] > 0.3, metrics  # chance: 1/135 and 20/135
    for key in ("recall@1", "recall@20", "mrr@100", "queries_per_second", "index_seconds"):
        assert key in metrics, key
    assert (tmp_path / "first" / "recall_at_k.png").exists()
    manifest = read_json(index_dir / "manifest.json")
    assert manifest["target"] == "my_retrievers.CharOverlapRetriever"

    second = run_plugin(plugin, tmp_path / "second", *overrides)
    assert second.returncode == 0, second.stderr[-3000:]
    again = read_json(tmp_path / "second" / "retrieval_metrics.json")
    assert again["index_loaded"] is True and again["recall@1"] == metrics["recall@1"]
    assert read_json(tmp_path / "second" / "retrieved.json") == retrieved

    changed = run_plugin(plugin, tmp_path / "third", *overrides, "retriever.lowercase=false")
    assert changed.returncode == 1 and "other parameters (lowercase: index True vs asked False)" in changed.stderr


def test_manifest_target_is_the_one_registry(plugin: tuple[Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """load_retriever finds the user's class from the manifest alone: no name table to register it in."""
    from retrievals.corpus import Passage
    from retrievals.manifest import load_retriever
    from retrievals.protocol import Retriever

    monkeypatch.syspath_prepend(str(plugin[0]))
    monkeypatch.delitem(sys.modules, "my_retrievers", raising=False)
    import my_retrievers

    passages = [Passage("a", "경복궁은 조선의 궁궐이다"), Passage("b", "판소리는 음악이다")]
    built = my_retrievers.CharOverlapRetriever().index(passages)
    assert isinstance(built, Retriever)
    built.save(tmp_path / "ix")
    loaded = load_retriever(tmp_path / "ix", passages=passages)
    assert type(loaded) is my_retrievers.CharOverlapRetriever and loaded.built_from_index
    assert loaded.search(["궁궐"], 1).ids == [["a"]]


def test_a_target_without_the_protocol_is_one_line(plugin: tuple[Path, Path], tmp_path: Path) -> None:
    result = run_plugin(plugin, tmp_path / "run", "retriever=broken")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "built a NotARetriever, not a retriever: it lacks kind, index, save, load, params, report" in result.stderr

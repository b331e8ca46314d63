"""Dense retrieval (``retrievals/dense.py``): FAISS scores against a brute-force computation with the encoder
itself, save / load (flat, hnsw) and its refusals, bad arguments, and ``task=retrieve retriever=dense`` through
main.py. The encoder is a tiny random BERT over a WordPiece vocabulary trained here: offline and fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from core.errors import DataFormatError  # noqa: E402
from core.text_encoders import EncoderSettings, embed, load_dense_encoder, save_dense_encoder  # noqa: E402
from retrievals.corpus import Passage  # noqa: E402
from retrievals.dense import DenseRetriever  # noqa: E402
from tests.conftest import read_json, run_main  # noqa: E402

# (title, passage, a question it answers)
DOCS = [
    ("경복궁", "경복궁은 1395년 태조 이성계가 한양에 세운 조선의 법궁이다.", "경복궁은 언제 세워졌나?"),
    ("창덕궁", "창덕궁은 1405년 태종 때 지어졌으며 후원이 아름답기로 유명하다.", "창덕궁의 후원은 무엇으로 유명한가?"),
    ("한글", "훈민정음은 1443년 세종대왕이 창제하고 1446년에 반포하였다.", "훈민정음을 창제한 왕은 누구인가?"),
    ("판소리", "판소리는 소리꾼과 고수가 함께 긴 이야기를 노래하는 한국의 전통 음악이다.", "판소리에서 북을 치는 사람은?"),
    ("김치", "김치는 배추와 무를 소금에 절이고 고춧가루와 젓갈로 버무려 발효시킨 음식이다.", "김치는 어떻게 만드나?"),
    ("한라산", "한라산은 제주도 중앙에 있는 높이 1947미터의 화산이다.", "한라산의 높이는 얼마인가?"),
    ("독도", "독도는 동해에 있는 화산섬으로 동도와 서도 두 섬으로 이루어져 있다.", "독도는 몇 개의 섬으로 이루어졌나?"),
    ("이순신", "이순신은 임진왜란 때 거북선을 이끌고 한산도 대첩에서 승리하였다.", "한산도 대첩을 이끈 장군은?"),
    ("거북선", "거북선은 지붕을 철판으로 덮고 용머리를 단 조선 수군의 돌격선이다.", "거북선의 지붕은 무엇으로 덮었나?"),
    ("첨성대", "첨성대는 신라 선덕여왕 때 경주에 세운 천문 관측대이다.", "첨성대는 어느 왕 때 세워졌나?"),
    ("불국사", "불국사는 751년 김대성이 창건을 시작한 경주의 사찰이다.", "불국사를 창건한 사람은?"),
    ("석굴암", "석굴암은 토함산에 있는 인공 석굴로 본존불이 유명하다.", "석굴암은 어느 산에 있나?"),
    ("한강", "한강은 서울을 가로질러 서해로 흘러드는 강이다.", "서울을 가로지르는 강은?"),
    ("설악산", "설악산은 강원도에 있으며 가을 단풍으로 널리 알려져 있다.", "설악산은 어느 도에 있나?"),
    ("태권도", "태권도는 발차기 기술이 발달한 한국의 무술로 올림픽 정식 종목이다.", "올림픽 정식 종목인 한국 무술은?"),
    ("세종", "세종은 집현전을 설치하고 측우기와 해시계 제작을 지원하였다.", "측우기 제작을 지원한 왕은?"),
    ("측우기", "측우기는 비의 양을 재기 위해 만든 조선의 관측 기구이다.", "측우기는 무엇을 재는 기구인가?"),
    ("고려청자", "고려청자는 비취색 유약과 상감 기법으로 이름난 도자기이다.", "고려청자의 색은?"),
    ("팔만대장경", "팔만대장경은 고려가 몽골의 침입을 물리치려고 새긴 경판으로 해인사에 있다.", "팔만대장경은 어디에 보관되어 있나?"),
    ("동의보감", "동의보감은 허준이 편찬한 의학 서적으로 1613년에 간행되었다.", "동의보감을 편찬한 사람은?"),
    ("부산", "부산은 한국 제2의 도시이자 가장 큰 항구 도시이다.", "한국에서 가장 큰 항구 도시는?"),
    ("비빔밥", "비빔밥은 밥 위에 나물과 고추장을 얹어 비벼 먹는 음식이다.", "비빔밥에 넣는 장은?"),
    ("한복", "한복은 저고리와 치마 또는 바지로 이루어진 한국의 전통 의복이다.", "한복의 윗옷을 무엇이라 하나?"),
    ("아리랑", "아리랑은 지역마다 가사와 가락이 다른 한국의 대표 민요이다.", "한국의 대표 민요는?"),
    ("제주도", "제주도는 한국에서 가장 큰 섬으로 돌과 바람과 여자가 많다고 한다.", "한국에서 가장 큰 섬은?"),
    ("백두산", "백두산은 한반도에서 가장 높은 산으로 정상에 천지가 있다.", "백두산 정상의 호수 이름은?"),
    ("금강산", "금강산은 계절마다 이름이 달라 가을에는 풍악산이라 부른다.", "가을의 금강산을 부르는 이름은?"),
    ("훈민정음해례본", "훈민정음 해례본은 글자를 만든 원리를 설명한 책으로 간송미술관이 소장한다.", "해례본을 소장한 곳은?"),
    ("수원화성", "수원 화성은 정조가 정약용의 설계로 쌓은 성곽이다.", "수원 화성을 설계한 사람은?"),
    ("남산타워", "남산 서울타워는 남산 꼭대기에 세운 전파 송신탑이자 전망대이다.", "남산 서울타워는 어디에 있나?"),
]
QUESTIONS = [question for _, _, question in DOCS]


@pytest.fixture(scope="module")
def passages() -> list[Passage]:
    return [Passage(f"p{i:02d}", text, title) for i, (title, text, _) in enumerate(DOCS)]


def _save_encoder(directory: Path, tokenizer, seed: int) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    settings = EncoderSettings(pooling="mean", normalize=True, query_max_length=32, passage_max_length=64)
    return save_dense_encoder(directory, BertModel(config), None, tokenizer, settings)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> tuple[Path, Path]:
    """Two encoder directories: the same vocabulary, weights from seeds 0 and 1."""
    from core.tokenizer_training import train_tokenizer

    base = tmp_path_factory.mktemp("encoders")
    texts = [f"{title}\n{text}" for title, text, _ in DOCS] + QUESTIONS
    tokenizer = train_tokenizer(texts, algorithm="wordpiece", vocab_size=300, min_frequency=1, limit_alphabet=2000,
                                lowercase=False, model_max_length=128)
    return _save_encoder(base / "enc0", tokenizer, 0), _save_encoder(base / "enc1", tokenizer, 1)


def _dense(encoder: Path, **kwargs) -> DenseRetriever:
    return DenseRetriever(model_path=str(encoder), **{"device": "cpu", "progress": False, "batch_size": 8, **kwargs})


@pytest.fixture(scope="module")
def flat(encoders, passages) -> DenseRetriever:
    return _dense(encoders[0], batch_size=7).index(passages)


def _one_by_one(encoder: Path, texts: list[str], *, passages: bool) -> np.ndarray:
    """Each text embedded alone (no padding) with the encoder's own model: the reference."""
    import torch

    enc = load_dense_encoder(str(encoder), device="cpu")
    s = enc.settings
    model = enc.passage_model if passages else enc.query_model
    length = s.passage_max_length if passages else s.query_max_length
    with torch.inference_mode():
        return np.stack([embed(model, dict(enc.tokenizer(t, truncation=True, max_length=length, return_tensors="pt")),
                               s)[0].numpy() for t in texts])


def test_flat_scores_equal_brute_force_inner_products(flat, encoders, passages):
    k = 10
    p = _one_by_one(encoders[0], [f"{d.title}\n{d.text}" for d in passages], passages=True)
    q = _one_by_one(encoders[0], QUESTIONS, passages=False)
    brute = q @ p.T
    result = flat.search(QUESTIONS, k)
    position = {d.id: i for i, d in enumerate(passages)}
    for row, (ids, scores) in enumerate(zip(result.ids, result.scores, strict=True)):
        assert len(ids) == k and all(isinstance(s, float) for s in scores)
        # the returned scores are the encoder's own inner products, and they are the k best, best first
        np.testing.assert_allclose(scores, brute[row, [position[i] for i in ids]], rtol=0, atol=1e-5)
        np.testing.assert_allclose(scores, np.sort(brute[row])[::-1][:k], rtol=0, atol=1e-5)
        best = int(np.argmax(brute[row]))
        if brute[row, best] - np.sort(brute[row])[-2] > 1e-4:  # no near-tie at the top
            assert ids[0] == passages[best].id
    report = flat.report()
    assert report["embedding_dim"] == 32 and report["device"] == "cpu" and report["index"] == "flat"
    assert report["encode_seconds"] >= 0 and report["build_seconds"] >= 0
    assert flat.params() == {"encoder_fingerprint": report["encoder_fingerprint"], "index": "flat", "hnsw_m": None,
                             "hnsw_ef_construction": None, "index_title": True, "pooling": "mean", "normalize": True}


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_save_load_gives_the_same_results(encoders, passages, tmp_path, index):
    built = _dense(encoders[0], index=index, hnsw_ef_search=64).index(passages)
    built.save(tmp_path / "ix")
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == ["ids.json", "index.faiss", "manifest.json"]
    manifest = read_json(tmp_path / "ix" / "manifest.json")
    assert manifest["retriever"] == "dense" and manifest["embedding_dim"] == 32
    assert manifest["encoder"] == str(encoders[0].resolve())
    want = built.search(QUESTIONS, 5)
    like = _dense(encoders[0], index=index, batch_size=3, hnsw_ef_search=64)
    for loaded in (DenseRetriever.load(tmp_path / "ix", passages=passages, like=like),
                   DenseRetriever.load(tmp_path / "ix", passages=passages)):  # the manifest's encoder
        got = loaded.search(QUESTIONS, 5)
        assert got.ids == want.ids
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
    assert DenseRetriever.load(tmp_path / "ix", like=like).batch_size == 3  # run options come from like


def test_load_refuses_a_changed_corpus_or_other_index_settings(flat, encoders, passages, tmp_path):
    flat.save(tmp_path / "ix")
    edited = [*passages[:3], Passage(passages[3].id, passages[3].text + " 수정", passages[3].title), *passages[4:]]
    with pytest.raises(DataFormatError, match="different corpus"):
        DenseRetriever.load(tmp_path / "ix", passages=edited, like=_dense(encoders[0]))
    with pytest.raises(DataFormatError, match="index: index 'flat' vs asked 'hnsw'"):
        DenseRetriever.load(tmp_path / "ix", passages=passages, like=_dense(encoders[0], index="hnsw"))


def test_load_refuses_another_encoder(flat, encoders, passages, tmp_path):
    flat.save(tmp_path / "ix")
    with pytest.raises(DataFormatError, match=r"built with encoder .* not retriever\.model_path=") as info:
        DenseRetriever.load(tmp_path / "ix", passages=passages, like=_dense(encoders[1]))
    assert "rebuild_index=true" in str(info.value)


def test_missing_model_path_names_the_key_and_the_fix(passages, tmp_path):
    with pytest.raises(ValueError, match=r"retriever\.model_path=.*no such directory.*\+experiment=dense_retriever"):
        _dense(tmp_path / "missing").index(passages)
    with pytest.raises(ValueError, match=r"retriever\.model_path is not set"):
        DenseRetriever().index(passages)


def test_bad_inputs_are_refused_with_a_clear_message(encoders, flat, passages):
    with pytest.raises(ValueError, match="empty corpus"):
        _dense(encoders[0]).index([])
    with pytest.raises(ValueError, match=r"k=31 is larger than the corpus \(30 passages"):
        flat.search(QUESTIONS[:2], 31)
    with pytest.raises(ValueError, match="wrap a single query"):
        flat.search("경복궁", 1)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="nothing indexed"):
        _dense(encoders[0]).search(QUESTIONS[:1], 1)
    for key, value in (("index", "ivf"), ("pooling", "max"), ("batch_size", 0), ("hnsw_m", -1), ("device", "gpu")):
        with pytest.raises(ValueError, match=rf"retriever\.{key}="):
            DenseRetriever(model_path="x", **{key: value})


def test_hnsw_finds_the_exact_top_1(encoders, flat, passages):
    hnsw = _dense(encoders[0], index="hnsw", hnsw_m=8, hnsw_ef_search=64).index(passages)
    exact, approx = flat.search(QUESTIONS, 3), hnsw.search(QUESTIONS, 3)
    for e_ids, e_scores, a_ids, a_scores in zip(exact.ids, exact.scores, approx.ids, approx.scores, strict=True):
        assert a_ids[0] == e_ids[0] or abs(a_scores[0] - e_scores[0]) < 1e-5
        assert a_scores[0] == pytest.approx(e_scores[0], abs=1e-5)
    assert hnsw.params()["hnsw_m"] == 8 and hnsw.params()["hnsw_ef_construction"] == 200


def test_retrieve_task_with_the_dense_retriever(encoders, passages, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n"
                              for p in passages), encoding="utf-8")
    squad = {"version": "1.1", "data": [
        {"title": title, "paragraphs": [{"context": text, "qas": [
            {"id": f"q{i:02d}", "question": question, "answers": [{"text": text[:2], "answer_start": 0}]}]}]}
        for i, (title, text, question) in enumerate(DOCS)]}
    questions = tmp_path / "validation.json"
    questions.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    run = tmp_path / "run"
    run_main("task=retrieve", "retriever=dense", f"retriever.model_path={encoders[0]}", "retriever.progress=false",
             f"retriever.corpus_file={corpus}", f"datamodule.validation_file={questions}", "retriever.top_k=5",
             "logger=none", "print_config=false", run_dir=run, cache_dir=tmp_path / "cache")
    retrieved = read_json(run / "retrieved.json")
    assert set(retrieved) == {f"q{i:02d}" for i in range(len(DOCS))} and all(len(v) == 5 for v in retrieved.values())
    metrics = read_json(run / "retrieval_metrics.json")
    assert metrics["retriever"] == "dense" and metrics["index"] == "flat" and metrics["embedding_dim"] == 32
    assert 0.0 <= metrics["recall@1"] <= metrics["recall@20"] <= metrics["recall@100"] == 1.0
    assert metrics["queries_per_second"] > 0
    assert (run / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"

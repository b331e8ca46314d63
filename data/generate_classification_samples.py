"""Generate the embedded Korean classification samples: ``data/re_sample`` (KLUE-RE) and ``data/nli_sample`` (KLUE-NLI).

Every sentence is written by this script from the project's own templates and invented names (CC0); no
external data is read. Stdlib only and deterministic::

    python data/generate_classification_samples.py [--seed 17] [--out data]

Names (people, organisations, places) used in validation never occur in any training sentence.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent
RE_SIZES = {"train": 2000, "validation": 400}
NLI_SIZES = {"train": 1800, "validation": 450}

# ----------------------------------------------------------------------------- Hangul particles


def _jong(word: str) -> int:
    """Final-consonant index (0: none, 8: ㄹ) of the last syllable; digits read as Sino-Korean numbers."""
    for ch in reversed(word):
        code = ord(ch) - 0xAC00
        if 0 <= code < 11172:
            return code % 28
        if ch.isdigit():
            return 0 if ch in "2459" else 1
    return 0


_JOSA = {"은": ("은", "는"), "는": ("은", "는"), "이": ("이", "가"), "가": ("이", "가"), "을": ("을", "를"),
         "를": ("을", "를"), "과": ("과", "와"), "와": ("과", "와"), "으로": ("으로", "로"), "로": ("으로", "로")}


def attach(word: str, particle: str) -> str:
    """The allomorph of ``particle`` that follows ``word`` (others verbatim)."""
    if particle not in _JOSA:
        return particle
    with_final, without_final = _JOSA[particle]
    jong = _jong(word)
    if particle in ("으로", "로"):
        return without_final if jong in (0, 8) else with_final
    return with_final if jong else without_final


SLOT = re.compile(r"<(\^?)([A-Z]+\d?)(?:\|([^>]*))?>")


def render(template: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Fill ``<S|은>`` (word + particle), ``<S>`` and ``<^S|은>`` (the particle alone); return text and word spans."""
    out, spans, last = [], {}, 0
    for m in SLOT.finditer(template):
        out.append(template[last:m.start()])
        only_particle, slot, particle = m.group(1), m.group(2), m.group(3) or ""
        word = values[slot]
        if only_particle:
            out.append(attach(word, particle))
        else:
            start = sum(len(p) for p in out)
            spans[slot] = (start, start + len(word))
            out.append(word + attach(word, particle))
        last = m.end()
    out.append(template[last:])
    return "".join(out), spans


# ----------------------------------------------------------------------------- invented names


def words(text: str) -> list[str]:
    """A space-separated word list."""
    return text.split()


SURNAMES = words("김 이 박 최 정 강 조 윤 장 임 한 오 서 신 권 황 안 송 류 홍 전 고 문 양 손 배 백 허 남 심")
GIVEN = words("민 서 지 현 우 준 하 윤 도 예 수 연 은 태 유 진 재 승 영 호 성 나 다 경 원 혜 희 동 상 보 소 아 채 시 건 "
         "규 선 주 미 율 찬 온 솔 결 빈 린 별 람 겸 훈 석 철 범 혁 욱 란 정 인 환")
STEMS = words("한빛 가람 누리 다온 미르 새솔 하람 보람 두레 아라 늘봄 해솔 그린 나래 도담 라온 마루 바른 슬기 온새 "
         "든솔 별하 새봄 하늘 고운 푸른 큰솔 한결 물빛 소담 여울 윤슬 가온 너울 단비 시나 예솜 초롱 한울 해밀")
ORG_SUFFIX = words("전자 건설 제약 식품 은행 항공 통신 화학 물산 증권 출판 신문 게임즈 모터스 바이오 에너지")
SCHOOL_SUFFIX = ["대학교", "공과대학교", "예술대학교", "고등학교"]
PLACE_SUFFIX = ["시", "군", "읍"]
TITLES = words("사장 회장 교수 감독 기자 작가 가수 배우 선수 의원 대표 연구원 변호사 요리사 화가")


class Names:
    """Fresh names of each kind; each name is used once in the whole dataset."""

    def __init__(self, rng: random.Random, used: set[str], forbidden_text: str = "") -> None:
        self.rng, self.used, self.forbidden_text = rng, used, forbidden_text

    def _fresh(self, make: Callable[[], str]) -> str:
        for _ in range(10000):
            name = make()
            if name not in self.used and name not in self.forbidden_text:
                self.used.add(name)
                return name
        raise RuntimeError("name inventory exhausted")

    def person(self) -> str:
        return self._fresh(lambda: self.rng.choice(SURNAMES) + "".join(self.rng.sample(GIVEN, 2)))

    def org(self) -> str:
        return self._fresh(lambda: self.rng.choice(STEMS) + self.rng.choice(STEMS)[0] + self.rng.choice(ORG_SUFFIX))

    def school(self) -> str:
        return self._fresh(lambda: self.rng.choice(STEMS) + self.rng.choice(STEMS)[1] + self.rng.choice(SCHOOL_SUFFIX))

    def place(self) -> str:
        return self._fresh(lambda: self.rng.choice(STEMS)[0] + self.rng.choice(STEMS)[1] + self.rng.choice(PLACE_SUFFIX))

    def date(self) -> str:
        year = self.rng.randint(1948, 2019)
        if self.rng.random() < 0.4:
            return f"{year}년"
        return f"{year}년 {self.rng.randint(1, 12)}월 {self.rng.randint(1, 28)}일"

    def title(self) -> str:
        return self.rng.choice(TITLES)


# ----------------------------------------------------------------------------- relation extraction

# relation: (subject type, object type, templates). <S>/<O> are the marked pair; G2 (organisation),
# P2 (person), L2 (place), N (number) and YEAR are unmarked words that add distracting entities.
RELATIONS: dict[str, tuple[str, str, list[str]]] = {
    "per:place_of_birth": ("PER", "LOC", [
        "<S|은> <O|에서> 태어나 그곳에서 어린 시절을 보냈다.",
        "<O> 출신인 <S|은> <G2|에서> 오랫동안 일했다.",
        "<S|이> 태어난 곳은 <O|으로> 알려져 있다.",
        "<O|에서> 태어난 <S|은> 열여섯 살에 처음 무대에 섰다.",
    ]),
    "per:date_of_birth": ("PER", "DAT", [
        "<S|은> <O|에> 태어났다.",
        "<O|에> 태어난 <S|은> 대학에서 경제학을 공부했다.",
        "<S>(<O> ~ )<^S|은> 대한민국의 배우이다.",
        "<S|의> 생일은 <O|이>며, 해마다 팬들이 축하 행사를 연다.",
    ]),
    "per:employee_of": ("PER", "ORG", [
        "<S|은> <O|에서> <N>년 동안 연구원으로 일했다.",
        "<O> 소속 <S|은> 이번 대회에서 금메달을 땄다.",
        "<S|은> 지난해 <O|에> 입사해 홍보 업무를 맡고 있다.",
        "<O|은> <S|을> 새 영업 책임자로 채용했다.",
    ]),
    "per:title": ("PER", "POH", [
        "<O> <S|은> 이날 기자들과 만나 소감을 밝혔다.",
        "<S|은> <G2|의> <O|으로> 임명되었다.",
        "<S> <O|은> 새 작품을 곧 공개한다고 말했다.",
    ]),
    "per:spouse": ("PER", "PER", [
        "<S|은> <O|과> <YEAR>에 결혼했다.",
        "<S|의> 남편인 <O|은> 이 소식을 듣고 크게 기뻐했다.",
        "<S|은> 배우자 <O|과> 함께 <L2|에서> 살고 있다.",
    ]),
    "per:schools_attended": ("PER", "ORG", [
        "<S|은> <O|을> 졸업한 뒤 <G2|에> 입사했다.",
        "<O|에서> 물리학을 공부한 <S|은> 지금은 연구소에서 일한다.",
        "<S|은> <O> 재학 시절 합창단 단장을 맡았다.",
    ]),
    "per:colleagues": ("PER", "PER", [
        "<S|은> 같은 팀 동료인 <O|과> 함께 새 프로젝트를 이끌었다.",
        "<G2|에서> 함께 일한 <S|과> <O|은> 오랜 친구 사이다.",
        "<S|은> 동료 <O|의> 도움으로 실험을 마칠 수 있었다고 말했다.",
    ]),
    "org:founded": ("ORG", "DAT", [
        "<S|은> <O|에> 설립되었다.",
        "<O|에> 문을 연 <S|은> 지금 직원이 <N>명에 이른다.",
        "<S|은> <O> 창립 이후 꾸준히 성장했다.",
    ]),
    "org:founded_by": ("ORG", "PER", [
        "<S|은> <O|이> 세운 회사이다.",
        "<O|은> <YEAR> <S|을> 창업했다.",
        "<S|의> 창업자 <O|은> 올해 은퇴를 선언했다.",
    ]),
    "org:place_of_headquarters": ("ORG", "LOC", [
        "<S|은> 본사를 <O|에> 두고 있다.",
        "<O|에> 본사가 있는 <S|은> 올해 매출이 크게 늘었다.",
        "<O|에> 자리한 <S> 본사에는 직원 <N>명이 일한다.",
    ]),
    "org:top_members/employees": ("ORG", "PER", [
        "<S|의> 대표인 <O|은> 새 사업 계획을 발표했다.",
        "<O> <S> 회장은 이날 주주총회에서 연설했다.",
        "<S|은> <O|을> 새 대표로 선임했다.",
    ]),
}
# Phrasings that only validation uses (about a third of its clauses): a score on them measures more than recall
# of the training templates.
UNSEEN: dict[str, str] = {
    "per:place_of_birth": "<O|에서> 나고 자란 <S|은> 고향에 작은 도서관을 지었다.",
    "per:date_of_birth": "<S|은> <O|에> 세상에 나왔다.",
    "per:employee_of": "<S|은> 현재 <O|의> 직원이다.",
    "per:title": "<S|은> 올해부터 <O|으로> 활동하고 있다.",
    "per:spouse": "<S|은> 아내 <O|과> 함께 여행을 다녀왔다.",
    "per:schools_attended": "<S|은> <O|에> 입학해 건축을 전공했다.",
    "per:colleagues": "<S|과> 한 부서에서 일하는 <O|은> 이번 보고서를 함께 썼다.",
    "org:founded": "<S|의> 창립 연도는 <O|이>다.",
    "org:founded_by": "<O|이> <YEAR> 설립한 <S|은> 지금 업계 1위이다.",
    "org:place_of_headquarters": "<S|의> 본사는 <O|에> 있다.",
    "org:top_members/employees": "<S|을> 이끄는 <O> 대표는 새 공장 건설을 발표했다.",
}
# Sentences with two entities and no relation between them (close to positive templates on purpose).
NO_RELATION: list[tuple[str, str, str]] = [
    ("PER", "PER", "<S|과> <O|은> 이날 서로 다른 행사에 참석했다."),
    ("PER", "LOC", "<S|은> 지난여름 <O|으로> 여행을 떠나 사진을 찍었다."),
    ("PER", "ORG", "<S|은> <O|에> 대한 기사를 읽고 의견을 남겼다."),
    ("PER", "DAT", "<S|은> <O|에> 열린 음악회에서 피아노를 연주했다."),
    ("ORG", "LOC", "<S|은> <O|에> 지점을 새로 열었다."),
    ("ORG", "DAT", "<S|은> <O|에> 새 제품을 처음 선보였다."),
    ("ORG", "PER", "<S|은> <O|에게> 올해의 공로상을 주었다."),
    ("ORG", "ORG", "<S|은> <O|과> 기술 협력 협약을 맺었다."),
]
KIND_OF = {"PER": "person", "ORG": "org", "LOC": "place", "DAT": "date", "POH": "title"}


def fill(template: str, subject_type: str, object_type: str, names: Names, rng: random.Random,
         subject_kind: str | None = None, object_kind: str | None = None) -> tuple[str, dict[str, tuple[int, int]], dict[str, str]]:
    values = {
        "S": getattr(names, subject_kind or KIND_OF[subject_type])(),
        "O": getattr(names, object_kind or KIND_OF[object_type])(),
    }
    extra: dict[str, Callable[[], str]] = {
        "G2": names.org, "P2": names.person, "L2": names.place,
        "N": lambda: str(rng.randint(3, 40)), "YEAR": lambda: f"{rng.randint(1960, 2020)}년",
    }
    for _, name, _ in SLOT.findall(template):
        if name not in values:
            values[name] = extra[name]()
    text, spans = render(template, values)
    return text, spans, values


def entity(text: str, span: tuple[int, int], kind: str) -> dict[str, Any]:
    start, end = span
    return {"word": text[start:end], "start_idx": start, "end_idx": end - 1, "type": kind}


def re_clause(relation: str, names: Names, rng: random.Random, unseen: float = 0.0) -> tuple[str, dict[str, tuple[int, int]], str, str]:
    """One positive clause: text, spans of S and O, and the entity types (``unseen``: share of UNSEEN phrasings)."""
    subject_type, object_type, templates = RELATIONS[relation]
    template = UNSEEN[relation] if rng.random() < unseen else rng.choice(templates)
    object_kind = "school" if relation == "per:schools_attended" else None
    text, spans, _ = fill(template, subject_type, object_type, names, rng, object_kind=object_kind)
    return text, spans, subject_type, object_type


def re_records(split: str, size: int, rng: random.Random, names: Names) -> list[dict[str, Any]]:
    """Single-clause positives, hard negatives, and two-clause sentences marked within or across clauses."""
    records: list[dict[str, Any]] = []

    def add(text: str, subject: tuple[int, int], subject_type: str, obj: tuple[int, int], object_type: str,
            label: str) -> None:
        records.append({
            "guid": f"re-sample-{split}-{len(records):05d}",
            "sentence": text,
            "subject_entity": entity(text, subject, subject_type),
            "object_entity": entity(text, obj, object_type),
            "label": label,
            "source": "re_sample",
        })

    relations = sorted(RELATIONS)
    unseen = 0.35 if split == "validation" else 0.0
    while len(records) < size:
        draw = rng.random()
        if draw < 0.5:  # one clause, one relation
            relation = rng.choice(relations)
            text, spans, st, ot = re_clause(relation, names, rng, unseen)
            add(text, spans["S"], st, spans["O"], ot, relation)
        elif draw < 0.7:  # a hard negative
            st, ot, template = rng.choice(NO_RELATION)
            text, spans, _ = fill(template, st, ot, names, rng)
            add(text, spans["S"], st, spans["O"], ot, "no_relation")
        else:  # two clauses: the same sentence, marked within a clause (its relation) or across (no_relation)
            first, second = rng.sample(relations, 2)
            text_a, spans_a, st_a, ot_a = re_clause(first, names, rng, unseen)
            text_b, spans_b, st_b, ot_b = re_clause(second, names, rng, unseen)
            shift = len(text_a) + 1
            text = f"{text_a} {text_b}"
            spans_b = {k: (s + shift, e + shift) for k, (s, e) in spans_b.items()}
            choice = rng.random()
            if choice < 0.5:
                subject_pair = rng.choice([(spans_a, st_a, ot_a, first), (spans_b, st_b, ot_b, second)])
                spans, st, ot, relation = subject_pair
                add(text, spans["S"], st, spans["O"], ot, relation)
            else:
                if rng.random() < 0.5:
                    add(text, spans_a["S"], st_a, spans_b["O"], ot_b, "no_relation")
                else:
                    add(text, spans_b["S"], st_b, spans_a["O"], ot_a, "no_relation")
    return records


# ----------------------------------------------------------------------------- natural language inference

PLACES = words("도서관 카페 공원 시장 미술관 체육관 서점 바닷가 식당 박물관 수영장 놀이터 영화관 기차역")
TIMES = ["어제", "지난 주말", "오늘 아침", "지난달", "그저께 저녁", "토요일 오후"]
# (object, particle, past, negative, past adnominal)
ACTIVITIES = [
    ("책", "을", "읽었다", "읽지 않았다", "읽은"),
    ("커피", "를", "마셨다", "마시지 않았다", "마신"),
    ("사진", "을", "찍었다", "찍지 않았다", "찍은"),
    ("그림", "을", "그렸다", "그리지 않았다", "그린"),
    ("편지", "를", "썼다", "쓰지 않았다", "쓴"),
    ("빵", "을", "샀다", "사지 않았다", "산"),
    ("노래", "를", "불렀다", "부르지 않았다", "부른"),
    ("축구", "를", "했다", "하지 않았다", "한"),
    ("영화", "를", "봤다", "보지 않았다", "본"),
    ("음식", "을", "만들었다", "만들지 않았다", "만든"),
    ("신문", "을", "읽었다", "읽지 않았다", "읽은"),
    ("산책", "을", "했다", "하지 않았다", "한"),
]
COMPANIONS = ["친구와", "동생과", "동료와", "어머니와", "이웃과"]
REASONS = ["시험 준비 때문에", "생일을 맞아", "비가 그친 뒤", "일을 일찍 마치고", "오랜만에"]


def nli_pair(label: str, names: Names, rng: random.Random, unseen: float = 0.0) -> tuple[str, str]:
    """A premise and a hypothesis of ``label``; ``unseen``: the share of hypotheses in validation-only phrasings."""
    person = names.person()
    p = person + attach(person, "은")
    place, when = rng.choice(PLACES), rng.choice(TIMES)
    obj, josa, past, negative, adnominal = rng.choice(ACTIVITIES)
    thing = obj + attach(obj, josa)
    alone = rng.random() < 0.35
    companion = "혼자" if alone else rng.choice(COMPANIONS)
    premise = f"{p} {when} {place}에서 {companion} {thing} {past}."
    if rng.random() < unseen:
        options = {
            "entailment": [f"{when} {place}에 {person}{attach(person, '이')} 있었다.", f"{p} {when} 무언가를 했다."],
            "contradiction": [f"{p} {when} {place}에 있지 않았다.", f"{p} {thing} 한 번도 {negative}."],
            "neutral": [f"{p} {place}의 단골손님이다.", f"{p} {when} 기분이 아주 좋았다."],
        }[label]
    elif label == "entailment":
        options = [
            f"{p} {thing} {past}.",
            f"{p} {when} {place}에 갔다.",
            f"{place}에서 {thing} {adnominal} 사람은 {person}{'이었다' if _jong(person) else '였다'}.",
            f"{p} 혼자가 아니었다." if not alone else f"{p} 아무와도 함께 있지 않았다.",
            f"{p} {place}에서 {thing} {past}.",
        ]
    elif label == "contradiction":
        options = [
            f"{p} {when} {place}에서 {thing} {negative}.",
            f"{p} {when} {place}에 가지 않았다.",
            f"{p} {rng.choice(COMPANIONS)} 함께 {thing} {past}." if alone else f"{p} 혼자 {thing} {past}.",
            f"{p} {when} 집 밖으로 한 번도 나가지 않았다.",
        ]
    else:
        others = [c for c in COMPANIONS if c != companion]
        options = [
            f"{p} {rng.choice(REASONS)} {place}에 갔다.",
            f"{p} {place}에서 세 시간 동안 {thing} {past}.",
            f"{p} 다음 날에도 {place}에 갔다.",
            f"{p} {obj}{attach(obj, josa)} 좋아한다.",
            f"{p} {place}에서 {rng.choice(others)} {thing} {past}." if alone else f"{p} {place}에서 처음으로 {thing} {past}.",
        ]
    return premise, rng.choice(options)


def nli_records(split: str, size: int, rng: random.Random, names: Names) -> list[dict[str, Any]]:
    labels = ["entailment", "neutral", "contradiction"]
    records = []
    for i in range(size):
        label = labels[i % 3]
        premise, hypothesis = nli_pair(label, names, rng, 0.35 if split == "validation" else 0.0)
        records.append({"guid": f"nli-sample-{split}-{i:05d}", "source": "nli_sample", "premise": premise,
                        "hypothesis": hypothesis, "gold_label": label})
    rng.shuffle(records)
    return records


# ----------------------------------------------------------------------------- writing


def nfc_all(records: list[dict[str, Any]]) -> None:
    for record in records:
        for key, value in record.items():
            if isinstance(value, str):
                assert unicodedata.is_normalized("NFC", value), (key, value)


def check_re(records: list[dict[str, Any]]) -> None:
    for record in records:
        for key in ("subject_entity", "object_entity"):
            e = record[key]
            assert record["sentence"][e["start_idx"]:e["end_idx"] + 1] == e["word"], record


def no_leak(train_text: str, validation_names: set[str]) -> None:
    leaked = sorted(n for n in validation_names if n in train_text)
    assert not leaked, f"validation names found in training text: {leaked[:5]}"


def generate(seed: int, out: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for task, sizes, make, folder in (("re", RE_SIZES, re_records, "re_sample"),
                                      ("nli", NLI_SIZES, nli_records, "nli_sample")):
        rng = random.Random(f"{seed}:{task}")
        used: set[str] = set()
        splits: dict[str, Any] = {"train": make("train", sizes["train"], rng, Names(rng, used))}
        train_text = json.dumps(splits["train"], ensure_ascii=False)
        before = set(used)
        splits["validation"] = make("validation", sizes["validation"], rng, Names(rng, used, train_text))
        no_leak(train_text, {n for n in used - before if len(n) > 2})  # person, organisation and place names
        target = out / folder
        target.mkdir(parents=True, exist_ok=True)
        for split in sizes:
            records = splits[split]
            nfc_all(records)
            if task == "re":
                check_re(records)
            lines = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)  # a JSON list, one record a line
            (target / f"{split}.json").write_text(f"[\n{lines}\n]\n", encoding="utf-8")
            label_key = "label" if task == "re" else "gold_label"
            summary[f"{folder}/{split}"] = dict(sorted(Counter(r[label_key] for r in records).items()))
        if task == "re":
            relations = ["no_relation", *sorted(RELATIONS)]
            (target / "relation_list.json").write_text(
                json.dumps({"relations": relations}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return summary


def cli(make: Callable[[int, Path], dict[str, Any]], doc: str, seed: int, folders: str) -> None:
    """``--seed`` / ``--out`` from the command line, then what ``make`` wrote, per split (the STS generator's too)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seed", type=int, default=seed, help=f"random seed (default {seed})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"parent directory of {folders}")
    args = parser.parse_args()
    for name, counts in make(args.seed, args.out).items():
        print(name, sum(counts.values()), counts)


def main() -> None:
    cli(generate, __doc__, 17, "re_sample/ and nli_sample/")


if __name__ == "__main__":
    main()

"""Generate the embedded Korean semantic-textual-similarity sample ``data/sts_sample`` (KLUE-STS records).

Every sentence is written by this script from the project's own templates and invented names (licence: MIT,
the project's); no external data is read. Stdlib only and deterministic::

    python data/generate_sts_sample.py [--seed 23] [--out data]

A pair describes one event twice (who, what, where, when, with whom). Each fact of the second sentence is
kept, left out or changed; the similarity is a weighted share of the facts the two sentences agree on, and
seven simulated annotators score it (0-5, with noise), as KLUE-STS's ``real-label`` is the mean of several
annotators' scores. The second sentence is usually phrased another way (word order, a cleft sentence,
synonyms), so word overlap alone does not give the score. Some second sentences are about something else
altogether (a review, the weather, a company), similarity 0. Names used in validation never occur in training.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from generate_classification_samples import (
    ACTIVITIES,
    COMPANIONS,
    PLACES,
    TIMES,
    Names,
    _jong,
    attach,
    cli,
    nfc_all,
    no_leak,
)

DEFAULT_OUT = Path(__file__).resolve().parent
SIZES = {"train": 4000, "validation": 400}
# Each split draws its people from its own pool: a name recurs in pairs of every score, so only comparing the
# two sentences tells the score (a name seen once would let a model memorise the pair instead).
PEOPLE = {"train": 400, "validation": 60}
# How much each fact weighs in the similarity (they add up to 5, KLUE-STS's maximum).
WEIGHTS = {"person": 1.25, "activity": 1.5, "place": 0.9, "time": 0.75, "companion": 0.6}
# A fact left out of the second sentence counts this share of its weight (less said, nothing contradicted).
OMITTED_SHARE = 0.5
ANNOTATORS = 7
# the share of pairs whose second sentence is on another topic
UNRELATED_SHARE = 0.15
UNRELATED = [
    "<C|에는> 내일 오후부터 비가 내리겠다.", "<C|은> 다음 달부터 시내버스 요금을 올린다.",
    "<G|은> 올해 매출이 <N>% 늘었다고 밝혔다.", "<G|이> 새 제품을 다음 주에 내놓는다.",
    "숙소가 깨끗하고 주인이 친절해서 좋았어요.", "방은 좁았지만 역에서 가까워서 편했습니다.",
    "이 제품은 배터리가 오래가서 만족스럽습니다.", "<C> 앞바다에서 규모 <N>의 지진이 났다.",
    "정부는 청년 주거 지원 예산을 <N>% 늘리기로 했다.", "<G> 주가가 이틀 연속 내렸다.",
]
ANNOTATOR_NOISE = 0.6
# Same meaning, other words: what a paraphrase may use instead.
PLACE_SYNONYMS = {"카페": "커피숍", "식당": "음식점", "바닷가": "해변", "영화관": "극장", "서점": "책방",
                  "기차역": "역", "놀이터": "어린이 놀이터", "수영장": "실내 수영장"}
TIME_SYNONYMS = {"어제": "전날", "지난 주말": "주말에", "오늘 아침": "아침 일찍", "그저께 저녁": "이틀 전 저녁",
                 "토요일 오후": "토요일 낮"}
ALONE = "혼자"


def copula(word: str) -> str:
    """``이었다`` after a final consonant, ``였다`` after a vowel."""
    return "이었다" if _jong(word) else "였다"


def realise(facts: dict[str, Any], style: int, synonyms: bool) -> str:
    """One sentence saying ``facts`` (a missing key is not said) in word order ``style`` (0-3)."""
    person = facts["person"]
    p = person + attach(person, "은")
    when = facts.get("time")
    place = facts.get("place")
    if synonyms:
        when = TIME_SYNONYMS.get(when, when) if when else None
        place = PLACE_SYNONYMS.get(place, place) if place else None
    companion = facts.get("companion")
    with_whom = None if companion is None else (ALONE if companion == ALONE else f"{companion} 함께")
    activity = facts.get("activity")
    if activity is None:  # only where and when: "went there"
        parts = [p, when, f"{place}에 갔다." if place else "밖에 나갔다."]
        if with_whom:
            parts.insert(2, with_whom)
        return " ".join(x for x in parts if x)
    obj, josa, past, _negative, adnominal = activity
    thing = obj + attach(obj, josa)
    where = f"{place}에서" if place else None
    if style == 0:
        parts = [p, when, where, with_whom, thing, past]
    elif style == 1:
        parts = [when, p, with_whom, where, thing, past]
    elif style == 2:
        parts = [where, p, when, with_whom, thing, past]
    else:  # a cleft sentence: "the one who did it there was X"
        parts = [when, where, with_whom, thing, adnominal, f"사람은 {person}{copula(person)}"]
    return " ".join(x for x in parts if x) + "."


def other(value: Any, options: list[Any], rng: random.Random) -> Any:
    """A value of ``options`` that is not ``value``."""
    return rng.choice([o for o in options if o != value])


def unrelated(names: Names, rng: random.Random) -> str:
    """A sentence on another topic than the events: a review, the weather, a company, a policy."""
    template = rng.choice(UNRELATED)
    values = {"C": names.place(), "G": names.org(), "N": str(rng.randint(2, 9))}
    for slot, value in values.items():
        for particle in ("은", "이", "에는"):
            template = template.replace(f"<{slot}|{particle}>", value + attach(value, particle))
        template = template.replace(f"<{slot}>", value)
    return template


def sts_pair(people: list[str], names: Names, rng: random.Random) -> tuple[str, str, float]:
    """Two sentences about one event (or an event and something else) and their true similarity (0-5)."""
    companions = [*COMPANIONS, ALONE]
    first = {"person": rng.choice(people), "time": rng.choice(TIMES), "place": rng.choice(PLACES),
             "activity": rng.choice(ACTIVITIES), "companion": rng.choice(companions)}
    if rng.random() < UNRELATED_SHARE:
        return realise(first, rng.randrange(4), synonyms=False), unrelated(names, rng), 0.0
    closeness = rng.random()  # how likely each fact is kept: spreads the scores over the whole range
    second: dict[str, Any] = {}
    similarity = 0.0
    for slot, weight in WEIGHTS.items():
        if rng.random() < closeness:
            second[slot], similarity = first[slot], similarity + weight
        elif slot in ("time", "place", "companion", "activity") and rng.random() < 0.35:
            similarity += OMITTED_SHARE * weight  # left out
        else:
            options = {"person": people, "time": TIMES, "place": PLACES, "activity": ACTIVITIES,
                       "companion": companions}[slot]
            second[slot] = other(first[slot], options, rng)
    first_style = rng.randrange(4)
    second_style = other(first_style, [0, 1, 2, 3], rng) if rng.random() < 0.7 else first_style
    text1 = realise(first, first_style, synonyms=False)
    text2 = realise(second, second_style, synonyms=rng.random() < 0.5)
    return text1, text2, similarity


def annotate(similarity: float, rng: random.Random) -> float:
    """The mean of ``ANNOTATORS`` noisy integer scores, as KLUE-STS's ``real-label``."""
    scores = [min(5, max(0, round(similarity + rng.gauss(0.0, ANNOTATOR_NOISE)))) for _ in range(ANNOTATORS)]
    return sum(scores) / len(scores)


def sts_records(split: str, size: int, rng: random.Random, names: Names) -> list[dict[str, Any]]:
    people = [names.person() for _ in range(PEOPLE[split])]
    records = []
    for i in range(size):
        sentence1, sentence2, similarity = sts_pair(people, names, rng)
        real = annotate(similarity, rng)
        label = round(real, 1)
        records.append({
            "guid": f"sts-sample-{split}-{i:05d}", "source": "sts-sample", "sentence1": sentence1,
            "sentence2": sentence2,
            "labels": {"label": label, "real-label": real, "binary-label": int(label >= 3.0)},
        })
    return records


def generate(seed: int, out: Path) -> dict[str, Any]:
    rng = random.Random(f"{seed}:sts")
    used: set[str] = set()
    splits = {"train": sts_records("train", SIZES["train"], rng, Names(rng, used))}
    train_text = json.dumps(splits["train"], ensure_ascii=False)
    before = set(used)
    splits["validation"] = sts_records("validation", SIZES["validation"], rng, Names(rng, used, train_text))
    no_leak(train_text, used - before)
    target = out / "sts_sample"
    target.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for split, records in splits.items():
        nfc_all(records)
        lines = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)  # a JSON list, one record a line
        (target / f"{split}.json").write_text(f"[\n{lines}\n]\n", encoding="utf-8")
        scores = Counter(min(int(r["labels"]["real-label"]), 4) for r in records)
        summary[f"sts_sample/{split}"] = {f"{k}-{k + 1}": scores[k] for k in range(5)}
    return summary


def main() -> None:
    cli(generate, __doc__, 23, "sts_sample/")


if __name__ == "__main__":
    main()

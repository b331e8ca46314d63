"""Generate the embedded Korean summarisation sample, ``data/summarization_sample`` (news-style text -> headline).

Every text and summary is written by this script from the project's own templates and invented names
(CC0); no external data is read. Stdlib only and deterministic::

    python data/generate_summarization_sample.py [--seed 11] [--out data/summarization_sample]

Five kinds of article (a city's budget, a company's quarterly results, a football match, the weather, a
festival). A text states its facts in 3 to 6 sentences, in a shuffled order with filler sentences; the
summary is a headline that copies the key facts (names, numbers) in a fixed order, as news headlines do.
The validation and test articles use combinations of facts that no training article has.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_classification_samples import attach  # noqa: E402  (one Hangul-particle rule for every sample)

DEFAULT_OUT = Path(__file__).resolve().parent / "summarization_sample"
SIZES = {"train": 400, "validation": 60, "test": 40}

CITIES = ["서울시", "부산시", "대구시", "인천시", "광주시", "대전시", "울산시", "세종시", "수원시", "창원시",
          "전주시", "청주시", "포항시", "강릉시", "목포시", "춘천시"]
POLICIES = ["청년 주거 지원", "노인 돌봄 서비스", "대중교통 요금 할인", "전기차 충전소 설치", "공공 도서관 확충",
            "소상공인 저금리 대출", "미세먼지 저감 사업", "어린이 보호구역 정비", "공공 와이파이 구축", "출산 장려금"]
COMPANIES = ["한빛전자", "누리식품", "가람건설", "솔빛제약", "다온통신", "마루자동차", "새봄화학", "온누리항공",
             "푸른에너지", "하늘소프트"]
TEAMS = ["푸른늑대", "붉은매", "은빛고래", "검은표범", "황금사자", "하얀학", "초록거북", "파란돌고래"]
PLAYERS = ["김도윤", "이서준", "박하람", "최시우", "정민재", "강태오", "윤지호", "한결", "오세린", "임다온"]
STADIUMS = ["중앙경기장", "해오름구장", "바다마루경기장", "별빛구장"]
REGIONS = ["수도권", "강원 영동", "충청 지역", "호남 지역", "영남 지역", "제주도", "경기 북부", "남해안"]
FESTIVALS = ["빛 축제", "국수 축제", "연등 축제", "불꽃 축제", "책 축제", "커피 축제", "재즈 축제", "도자기 축제"]
QUARTERS = ["1분기", "2분기", "3분기", "4분기"]


def particle(word: str, josa: str) -> str:
    return word + attach(word, josa)


# Each kind: the facts drawn, the sentences that state them (each a function of the facts), fillers, headline.
Facts = dict[str, str]


def city_budget(rng: random.Random) -> Facts:
    verb = rng.choice(["늘린다", "줄인다"])
    return {"city": rng.choice(CITIES), "policy": rng.choice(POLICIES), "pct": str(rng.randint(5, 60)),
            "day": str(rng.randint(1, 28)), "verb": verb, "noun": "확대" if verb == "늘린다" else "축소",
            "year": rng.choice(["내년", "올해 하반기", "2027년"])}


def city_text(f: Facts, rng: random.Random) -> tuple[list[str], list[str]]:
    facts = [
        f"{particle(f['city'], '는')} {f['day']}일 시청에서 기자회견을 열고 {f['year']} {f['policy']} 예산을 "
        f"{f['pct']}% {f['verb']}고 밝혔다.",
        rng.choice([f"시 관계자는 \u201c{f['policy']} 사업의 효과를 다시 따져 본 결과\u201d라고 설명했다.",
                    f"{f['policy']} 사업은 지난해 시민 설문에서 가장 많이 거론된 분야다."]),
    ]
    fillers = [f"{particle(f['city'], '는')} 다음 달 시의회에 예산안을 제출할 예정이다.",
               "시민단체들은 이번 결정에 대해 엇갈린 반응을 보였다.",
               "이번 발표는 올해 두 번째 예산 조정이다.",
               f"{f['city']} 인구는 최근 5년 사이 조금씩 줄고 있다."]
    return facts, fillers


def city_headline(f: Facts) -> str:
    return f"{f['city']}, {f['year']} {f['policy']} 예산 {f['pct']}% {f['noun']}"


def company_results(rng: random.Random) -> Facts:
    up = rng.random() < 0.5
    return {"company": rng.choice(COMPANIES), "quarter": rng.choice(QUARTERS), "profit": str(rng.randint(12, 990)),
            "pct": str(rng.randint(2, 80)), "trend": "증가" if up else "감소", "day": str(rng.randint(1, 28)),
            "sales": f"{rng.randint(1, 9)}조 {rng.randint(1, 9)}천억"}


def company_text(f: Facts, rng: random.Random) -> tuple[list[str], list[str]]:
    facts = [
        f"{particle(f['company'], '는')} {f['quarter']} 영업이익이 {f['profit']}억 원으로 지난해 같은 기간보다 "
        f"{f['pct']}% {f['trend']}했다고 {f['day']}일 공시했다.",
        f"같은 기간 매출은 {f['sales']} 원을 기록했다.",
    ]
    reason = "신제품 판매가 늘어난 덕분" if f["trend"] == "증가" else "원자재 가격이 오른 탓"
    fillers = [f"회사 측은 실적 변화가 {reason}이라고 설명했다.",
               "증권가는 다음 분기 전망을 두고 의견이 갈렸다.",
               f"{particle(f['company'], '는')} 올해 하반기 해외 공장 증설을 검토하고 있다.",
               "주가는 공시 직후 소폭 움직였다."]
    return facts, fillers


def company_headline(f: Facts) -> str:
    return f"{f['company']}, {f['quarter']} 영업이익 {f['profit']}억 원\u2026 {f['pct']}% {f['trend']}"


def football(rng: random.Random) -> Facts:
    home, away = rng.sample(TEAMS, 2)
    won = rng.randint(1, 5)
    lost = rng.randint(0, won - 1)
    return {"home": home, "away": away, "won": str(won), "lost": str(lost), "player": rng.choice(PLAYERS),
            "goals": str(rng.randint(1, won)), "stadium": rng.choice(STADIUMS), "day": str(rng.randint(1, 28))}


def football_text(f: Facts, rng: random.Random) -> tuple[list[str], list[str]]:
    facts = [
        f"{particle(f['home'], '가')} {f['day']}일 {f['stadium']}에서 열린 리그 경기에서 {particle(f['away'], '를')} "
        f"{f['won']}대 {f['lost']}로 꺾었다.",
        f"{particle(f['player'], '가')} {f['goals']}골을 넣으며 승리를 이끌었다.",
    ]
    fillers = ["이날 경기장에는 만 명이 넘는 관중이 찾았다.",
               f"{particle(f['away'], '는')} 후반 들어 반격에 나섰지만 골문을 열지 못했다.",
               "두 팀은 다음 달 컵 대회에서 다시 맞붙는다.",
               f"{f['home']} 감독은 \u201c선수들이 끝까지 집중했다\u201d고 말했다."]
    return facts, fillers


def football_headline(f: Facts) -> str:
    return f"{f['home']}, {f['away']}에 {f['won']}대 {f['lost']} 승리\u2026 {f['player']} {f['goals']}골"


def weather(rng: random.Random) -> Facts:
    return {"region": rng.choice(REGIONS), "rain": str(rng.choice(range(10, 160, 10))),
            "temp": str(rng.randint(-5, 34)), "day": str(rng.randint(1, 28)),
            "when": rng.choice(["오후부터", "새벽부터", "밤사이", "아침까지"])}


def weather_text(f: Facts, rng: random.Random) -> tuple[list[str], list[str]]:
    facts = [
        f"{f['day']}일 {f['region']}에 {f['when']} 최대 {f['rain']}mm의 비가 내릴 전망이다.",
        f"기상청은 이날 낮 최고기온이 {f['temp']}도 안팎이 될 것이라고 예보했다.",
    ]
    fillers = ["비는 다음 날 오전에 대부분 그칠 것으로 보인다.",
               "바람도 강하게 불어 시설물 관리에 주의가 필요하다.",
               "출퇴근길 교통 혼잡이 예상된다.",
               "주말에는 다시 맑은 날씨가 이어지겠다."]
    return facts, fillers


def weather_headline(f: Facts) -> str:
    return f"{f['region']} {f['when']} 최대 {f['rain']}mm 비\u2026 낮 최고 {f['temp']}도"


def festival(rng: random.Random) -> Facts:
    return {"city": rng.choice(CITIES), "festival": rng.choice(FESTIVALS), "month": str(rng.randint(1, 12)),
            "start": str(rng.randint(1, 25)), "days": str(rng.randint(2, 10)),
            "visitors": str(rng.randint(2, 90))}


def festival_text(f: Facts, rng: random.Random) -> tuple[list[str], list[str]]:
    facts = [
        f"{f['city']} {particle(f['festival'], '이')} {f['month']}월 {f['start']}일부터 {f['days']}일 동안 열린다.",
        f"주최 측은 올해 방문객을 {f['visitors']}만 명으로 예상했다.",
    ]
    fillers = ["축제 기간에는 행사장 주변 도로가 통제된다.",
               "지난해 축제는 비 때문에 하루 일찍 끝났다.",
               "올해는 야간 공연과 체험 행사가 새로 마련됐다.",
               "입장료는 받지 않는다."]
    return facts, fillers


def festival_headline(f: Facts) -> str:
    return f"{f['city']} {f['festival']}, {f['month']}월 {f['start']}일부터 {f['days']}일간 개최"


KINDS: dict[str, tuple[Callable[[random.Random], Facts], Callable, Callable[[Facts], str]]] = {
    "city_budget": (city_budget, city_text, city_headline),
    "company_results": (company_results, company_text, company_headline),
    "football": (football, football_text, football_headline),
    "weather": (weather, weather_text, weather_headline),
    "festival": (festival, festival_text, festival_headline),
}


def article(kind: str, rng: random.Random) -> tuple[str, str]:
    """(text, summary) of one article of ``kind``."""
    draw, write, headline = KINDS[kind]
    facts = draw(rng)
    stated, fillers = write(facts, rng)
    body = [stated[0], *rng.sample(fillers, rng.randint(1, len(fillers))), *stated[1:]]
    head, rest = body[0], body[1:]
    rng.shuffle(rest)  # the lead sentence first, as in news; the rest in any order
    return " ".join([head, *rest]), headline(facts)


def generate(seed: int) -> dict[str, list[dict[str, str]]]:
    """Splits of {id, text, summary} (test: no summary); no headline of validation/test occurs in training."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    seen: set[str] = set()
    out: dict[str, list[dict[str, str]]] = {}
    for split, size in SIZES.items():
        rows: list[dict[str, str]] = []
        while len(rows) < size:
            kind = kinds[len(rows) % len(kinds)]
            text, summary = article(kind, rng)
            if summary in seen:  # every headline once across all splits: nothing to memorise from training
                continue
            seen.add(summary)
            row = {"id": f"{split}-{len(rows):04d}", "kind": kind, "text": text}
            if split != "test":
                row["summary"] = summary
            rows.append(row)
        out[split] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in generate(args.seed).items():
        path = args.out / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} records")


if __name__ == "__main__":
    main()

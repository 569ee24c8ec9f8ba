"""Writes the shipped decontamination sample: two tiny evaluation sets, a corpus with planted copies, and the
manifest of what was planted (planted.json). All text written for rayflow. Run: python make_data.py"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

QA = [
    {"id": "qa-1", "split": "test",
     "question": "Which gas do green plants take in from the air to build sugars during photosynthesis?",
     "answer": "Carbon dioxide, which the leaves absorb through tiny pores called stomata."},
    {"id": "qa-2", "split": "test",
     "question": "In what year did the first crewed landing on the Moon take place, and which mission achieved it?",
     "answer": "It happened in 1969, when the Apollo 11 crew set down in the Sea of Tranquility."},
    {"id": "qa-3", "split": "test",
     "question": "How many bones does an adult human skeleton usually contain when the small sesamoid bones are "
                 "not counted?",
     "answer": "An adult skeleton usually has two hundred and six bones."},
    {"id": "qa-4", "split": "test",
     "question": "What is the boiling point of pure water at sea level on the Celsius scale?",
     "answer": "Pure water boils at one hundred degrees Celsius at standard sea-level pressure."},
    {"id": "qa-5", "split": "test",
     "question": "Which planet in our solar system has the shortest day of all the planets?",
     "answer": "Jupiter, which spins once on its axis in just under ten hours."},
    {"id": "qa-6", "split": "dev",
     "question": "What is the name of the longest river that flows through Egypt?",
     "answer": "The Nile, which runs north until it empties into the Mediterranean Sea."},
    {"id": "qa-7", "split": "test", "question": "What is the chemical symbol for gold?", "answer": "Au."},
    {"id": "qa-8", "split": "dev",
     "question": "Why does a metal spoon feel colder than a wooden spoon at the same room temperature?",
     "answer": "Metal conducts heat away from the hand much faster than wood does."},
]
ZH = [
    {"id": "zh-1", "text": "光合作用是植物利用阳光把二氧化碳和水转化为葡萄糖并释放氧气的过程。"},
    {"id": "zh-2", "text": "富士山は日本で一番高い山で、高さは三千七百七十六メートルです。"},
    {"id": "zh-3", "text": "서울은 대한민국의 수도이며 한강이 도시 한가운데를 가로질러 흐른다."},
]

FILLER = [
    ("The village bakery opens at six in the morning, and by seven the line usually reaches the corner. Regulars "
    "know to ask for the rye loaf before it sells out, while newcomers tend to linger over the pastries and the "
    "chalkboard of daily specials that the owner rewrites every evening after closing."),
    ("Cycling along the river path is pleasant in autumn, when the trees turn orange and the air is cool. The "
    "route passes two old mills, a footbridge painted bright green, and a small cafe where riders stop to refill "
    "their bottles and compare notes about the wind on the way back into town."),
    ("A good notebook for field sketches should have thick paper that does not buckle under a wet brush. Many "
    "painters carry a small tin of colours, a water brush and a clip to hold the pages flat when the breeze "
    "picks up, and they date every page so the seasons can be compared later."),
    ("Learning to bake sourdough takes patience. The starter needs regular feeding, the dough needs long rests, "
    "and the oven has to be very hot. Most home bakers ruin a few loaves before they learn to read the dough "
    "by touch rather than by the clock on the kitchen wall."),
    ("The library's reading room was restored last year. New lamps light the long oak tables, the tall windows "
    "were cleaned of decades of grime, and the catalogue drawers were kept as a reminder of how people searched "
    "for books before everything moved onto screens at the front desk."),
    ("Keeping chickens in a garden is easier than many people expect. A dry coop, fresh water, a fence against "
    "foxes and a daily handful of grain are the basics. In return the hens clear weeds, eat slugs and lay eggs "
    "for most of the year except in the darkest weeks of winter."),
    ("Our hiking club meets on the first Saturday of every month. Routes are chosen to suit mixed abilities, "
    "with a shorter loop for anyone who wants to turn back early. Members share lifts to the trailhead and take "
    "turns bringing a flask of tea for the summit break when the weather allows."),
    ("The market square hosts a flea market every Sunday. Stalls sell old records, chipped teapots, bicycle "
    "parts and the occasional oil painting of uncertain origin. Haggling is expected, and the best finds are "
    "usually gone within the first hour after the gates open to the public."),
]

CORPUS = [
    {"id": "doc-verbatim", "plants": "qa-1",
     "text": FILLER[0] + " Quiz corner for this week: Which gas do green plants take in from the air to build "
     "sugars during photosynthesis? Carbon dioxide, which the leaves absorb through tiny pores called stomata. "
     + FILLER[1]},
    {"id": "doc-case-punct", "plants": "qa-2",
     "text": "HISTORY TRIVIA!!! in what year did the FIRST crewed landing on the moon take place -- and which "
     "mission achieved it?? it happened in 1969: when the apollo-11 crew set down in the 'sea of tranquility'... "
     + FILLER[2]},
    {"id": "doc-partial", "plants": "qa-3",
     "text": FILLER[3] + " A reader asked us: how many bones does an adult human skeleton usually contain when "
     "the small sesamoid bones are not counted? We will answer that in next month's issue. " + FILLER[4]},
    {"id": "doc-paraphrase", "plants": "qa-4",
     "text": "At normal atmospheric pressure near the coast, water without impurities starts to bubble and turn "
     "to steam once it reaches 100 degrees on the centigrade thermometer. Up in the mountains the air is "
     "thinner, so a kettle comes to the boil sooner and at a lower reading. " + FILLER[5]},
    {"id": "doc-short", "plants": "qa-7",
     "text": FILLER[6] + " Pub quiz warm-up round. What is the chemical symbol for gold? Au. What is the "
     "symbol for silver? Ag. Points are doubled for anyone who also names the metal's atomic number."},
    {"id": "doc-fullwidth", "plants": "qa-8",
     "text": "Ｗｈｙ ｄｏｅｓ ａ ｍｅｔａｌ ｓｐｏｏｎ feel colder than a wooden spoon at the same room "
     "temperature? Metal conducts heat away from the hand much faster than wood does. " + FILLER[7]},
    {"id": "doc-zh", "plants": "zh-1",
     "text": "今天的科学课讲的是植物。老师说：光合作用是植物利用阳光把二氧化碳和水转化为葡萄糖并释放氧气的过程。"
     "下课以后，我们在校园里观察了不同的树叶，并把它们画在了笔记本上。"},
    {"id": "doc-ja", "plants": "zh-2",
     "text": "旅行の記録。富士山は日本で一番高い山で 高さは三千七百七十六メートルです！"
     "私たちは五合目まで バスで行き、そこから少し歩きました。"},
    {"id": "doc-ko", "plants": None,
     "text": "부산은 바다와 산이 어우러진 항구 도시로, 여름이면 해수욕장에 많은 사람이 모인다."},
] + [{"id": f"doc-filler-{i}", "plants": None, "text": t} for i, t in enumerate(FILLER)]

# What the rules must say about every example (the offline config is checked against this in CI).
EXPECTED = {
    "rayflow-qa/qa-1": {"planted": "verbatim", "gpt3": True, "palm": True, "coverage": "dirty"},
    "rayflow-qa/qa-2": {"planted": "case and punctuation changed", "gpt3": True, "palm": True, "coverage": "dirty"},
    "rayflow-qa/qa-3": {"planted": "partial (question only)", "gpt3": True, "palm": False, "coverage": "partial"},
    "rayflow-qa/qa-4": {"planted": "paraphrased", "gpt3": False, "palm": False, "coverage": "clean"},
    "rayflow-qa/qa-5": {"planted": None, "gpt3": False, "palm": False, "coverage": "clean"},
    "rayflow-qa/qa-6": {"planted": None, "gpt3": False, "palm": False, "coverage": "clean"},
    "rayflow-qa/qa-7": {"planted": "verbatim, shorter than n", "gpt3": True, "palm": True, "coverage": "dirty"},
    "rayflow-qa/qa-8": {"planted": "full-width letters", "gpt3": True, "palm": True, "coverage": "dirty"},
    "rayflow-zh/zh-1": {"planted": "CJK verbatim", "gpt3": True, "palm": True, "coverage": "dirty"},
    "rayflow-zh/zh-2": {"planted": "CJK, punctuation changed", "gpt3": True, "palm": True, "coverage": "dirty"},
    "rayflow-zh/zh-3": {"planted": None, "gpt3": False, "palm": False, "coverage": "clean"},
}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    write_jsonl(HERE / "qa.jsonl", QA)
    write_jsonl(HERE / "zh.jsonl", ZH)
    write_jsonl(HERE / "corpus.jsonl", CORPUS)
    (HERE / "planted.json").write_text(json.dumps(EXPECTED, indent=2, ensure_ascii=False) + "\n")

#!/usr/bin/env python3
"""Writes the small relation-extraction set Chorus tests and demos MVRE on (no public RE set can be installed
here). Standard library only, deterministic.

Sentences come from hand-written templates, several per relation, over hand-written entity lists; eight TACRED
relations plus no_relation (sentences naming two entities that the sentence does not relate). Entities are split
so that train, dev and test use disjoint people and organisations: a model must read the sentence, not remember
names. Output (TACRED-style JSON lines with `h.pos`/`t.pos` spans, end exclusive, the MVRE repository's format):
train.txt, dev.txt, test.txt, rel2id.json.
"""
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent

PEOPLE = ["Maria Lopez", "John Carter", "Aiko Tanaka", "Lars Berg", "Fatima Noor", "Peter Novak", "Chen Wei",
          "Amara Obi", "Elena Rossi", "David Cohen", "Sofia Petrova", "Omar Haddad", "Grace Kim", "Luca Bianchi",
          "Nina Schulz", "Raj Patel", "Hana Sato", "Tom Evans", "Ines Duarte", "Ivan Horvat", "Laura Fischer",
          "Kofi Mensah", "Yara Saleh", "Mark Olsen", "Julia Weber", "Ana Silva", "Ben Hughes", "Mei Lin",
          "Oscar Nilsson", "Sara Levi", "Paul Martin", "Lena Kraus", "Ali Demir", "Eva Horak", "Sam Porter",
          "Rosa Marin"]
ORGS = ["Northwind Labs", "Bluepeak Systems", "Asterix Foods", "Greenline Energy", "Quanta Motors", "Helio Bank",
        "Riverstone Media", "Cobalt Robotics", "Silverleaf Pharma", "Vantage Air", "Nimbus Software", "Orion Steel",
        "Pinecrest Insurance", "Redwood Textiles", "Solstice Games", "Tidewater Shipping", "Ultra Optics",
        "Zenith Chemicals"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Osaka", "Toronto", "Krakow", "Lyon", "Seattle", "Porto", "Munich",
          "Accra", "Busan", "Dublin", "Austin", "Turin", "Gdansk"]
COUNTRIES = ["Portugal", "Norway", "Kenya", "Japan", "Canada", "Poland", "France", "Germany", "Ghana", "Ireland"]
SCHOOLS = ["Harwood University", "Lakeside College", "the Institute of Kelmar", "Brightwater University",
           "Eastfield College", "Marlow Polytechnic"]
TITLES = ["chemist", "architect", "economist", "engineer", "journalist", "physician", "lawyer", "painter"]

# relation: (subject kind, object kind, templates with {s} and {o})
RELATIONS = {
    "org:founded_by": ("org", "per", [
        "{s} was founded by {o} in a small garage .",
        "{o} started {s} after leaving university .",
        "In 2004 , {o} founded {s} with two friends .",
        "{s} , the company created by {o} , grew quickly .",
        "The founder of {s} , {o} , spoke at the event .",
    ]),
    "per:employee_of": ("per", "org", [
        "{s} works as a manager at {o} .",
        "{s} joined {o} last spring .",
        "{o} hired {s} to lead its research team .",
        "{s} , an employee of {o} , gave the keynote .",
        "After ten years at {o} , {s} still enjoys the job .",
    ]),
    "per:city_of_birth": ("per", "loc", [
        "{s} was born in {o} .",
        "Born in {o} , {s} moved abroad as a child .",
        "{s} grew up far from {o} , the city of her birth .",
        "{o} is the birthplace of {s} .",
        "{s} , a native of {o} , returned home last year .",
    ]),
    "org:city_of_headquarters": ("org", "loc", [
        "{s} is headquartered in {o} .",
        "{s} moved its head office to {o} .",
        "The headquarters of {s} are in {o} .",
        "From its base in {o} , {s} serves clients worldwide .",
        "{o} hosts the main office of {s} .",
    ]),
    "per:spouse": ("per", "per", [
        "{s} is married to {o} .",
        "{s} and her husband {o} live by the sea .",
        "{s} married {o} in a quiet ceremony .",
        "{o} , the wife of {s} , is a writer .",
        "{s} met {o} , whom he later married , at school .",
    ]),
    "per:schools_attended": ("per", "school", [
        "{s} studied physics at {o} .",
        "{s} graduated from {o} in 1998 .",
        "{s} earned a degree at {o} .",
        "As a student at {o} , {s} played chess .",
        "{o} awarded {s} a doctorate .",
    ]),
    "per:title": ("per", "title", [
        "{s} is a {o} .",
        "{s} worked for years as a {o} .",
        "The {o} {s} published a new study .",
        "{s} , a respected {o} , joined the panel .",
        "{s} trained as a {o} before turning to politics .",
    ]),
    "org:country_of_headquarters": ("org", "country", [
        "{s} is based in {o} .",
        "{s} , a company from {o} , opened a new plant .",
        "{s} has its headquarters in {o} .",
        "The firm {s} , based in {o} , reported record sales .",
        "{s} runs its business from {o} .",
    ]),
}
NO_RELATION = [
    ("per", "org", "{s} read a report about {o} on the train ."),
    ("per", "loc", "{s} visited {o} for a conference ."),
    ("org", "per", "{s} declined to comment on the remarks by {o} ."),
    ("per", "per", "{s} sat next to {o} at the concert ."),
    ("org", "loc", "{s} sent a delegation to a fair in {o} ."),
    ("per", "school", "{s} gave a talk at {o} ."),
    ("org", "country", "{s} considered a deal with a firm from {o} ."),
    ("per", "org", "{s} criticised the new product of {o} ."),
]


def pools(split):
    """Disjoint people and organisations per split; places, schools and titles are shared."""
    p = {"train": slice(0, 22), "dev": slice(22, 29), "test": slice(29, 36)}[split]
    o = {"train": slice(0, 10), "dev": slice(10, 14), "test": slice(14, 18)}[split]
    return {"per": PEOPLE[p], "org": ORGS[o], "loc": CITIES, "country": COUNTRIES, "school": SCHOOLS, "title": TITLES}


def example(rng, kinds, tpl, pool, relation, n):
    sk, ok = kinds
    s = rng.choice(pool[sk])
    o = rng.choice([x for x in pool[ok] if x != s])
    # Tokenize the template with the entities as placeholders so the spans are exact.
    words, h, t = [], None, None
    for w in tpl.split():
        if w == "{s}":
            h = [len(words), len(words) + len(s.split())]
            words += s.split()
        elif w == "{o}":
            t = [len(words), len(words) + len(o.split())]
            words += o.split()
        else:
            words.append(w)
    return {"id": f"{relation}-{n}", "token": words, "h": {"name": s, "pos": h}, "t": {"name": o, "pos": t},
            "relation": relation}


def main():
    rng = random.Random(20261127)
    rel2id = {"no_relation": 0, **{r: i + 1 for i, r in enumerate(RELATIONS)}}
    per_split = {"train": 24, "dev": 8, "test": 12}
    for split, n in per_split.items():
        pool = pools(split)
        rows = []
        for rel, (sk, ok, tpls) in RELATIONS.items():
            for i in range(n):
                rows.append(example(rng, (sk, ok), tpls[i % len(tpls)], pool, rel, f"{split}{i}"))
        for i in range(n * 2):
            sk, ok, tpl = NO_RELATION[i % len(NO_RELATION)]
            rows.append(example(rng, (sk, ok), tpl, pool, "no_relation", f"{split}{i}"))
        rng.shuffle(rows)
        (OUT / f"{split}.txt").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (OUT / "rel2id.json").write_text(json.dumps(rel2id, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

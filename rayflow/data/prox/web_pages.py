"""Generated web-like pages for training and testing refiners offline: articles in site furniture, and junk.

A *site template* fixes a site's name, its menu, and which header and footer blocks wrap every page of it (skip
links, navigation bars, breadcrumbs, login and JavaScript notices, bylines; share, related-post, comment,
newsletter, cookie, pager, tag, advert and copyright blocks), in its own order and wording. A page is an
article (a title and two to four prose paragraphs from rayflow's tiny corpus, sometimes with inline furniture
such as `[edit]` or an advert line between paragraphs) or a low-quality page (keyword spam, a stub, lorem
ipsum, hashtags, a product list, a login form, a link farm, a one-paragraph note), wrapped in its site's
template or not.

Templates are numbered; `split_of_template` puts every fifth one in the held-out split, and held-out pages also
take their paragraphs from a held-out fifth of the corpus, so a refiner is tested on page layouts and texts it
never saw. Everything is drawn from one `random.Random(seed)`: the same arguments give the same pages.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

CORPUS_PATH = Path(__file__).resolve().parents[2] / "llm" / "tiny_corpus.txt"
N_TEMPLATES = 40
LOW_QUALITY_SHARE = 0.35

_SITES = [
    "Home & Hearth", "Daily Explainer", "The Field Notes", "Northside Gazette", "Pocket Science",
    "Green Thumb Weekly", "Kitchen Table", "City Cycle Club", "Harbour Times", "Open Shelf",
    "Trail Runner", "Byte Sized", "Maple Street Journal", "The Quiet Reader", "Bright Side Media",
    "Weekend Maker", "Coastline Review", "Little Lab", "Market Square News", "Stone & Timber",
]  # fmt: skip
_MENU = [
    "Home", "News", "Science", "Health", "Opinion", "Recipes", "Garden", "About", "Contact", "Blog", "Shop",
    "Forum", "Articles", "Travel", "Sport", "Culture", "Events", "Guides", "Reviews", "Video",
]  # fmt: skip
_SEPARATORS = ["|", "»", "›", "•", "/", "·"]
_RELATED_TITLES = [
    "10 Easy Weeknight Dinners", "Our Favourite Kitchen Tools", "The Science of Habits", "Why We Dream",
    "Top 5 Mistakes Beginners Make", "A Guide for the Weekend", "Read the FAQ", "What to Pack for a Hike",
    "The Best Books of the Year", "How to Start a Garden", "Five Quiet Places to Visit", "Tools Worth Buying",
    "A Short History of Bread", "Ten Tips for Better Sleep", "Meet the Team", "Our Most Read Stories",
]  # fmt: skip
_NAMES = ["admin", "editor", "Anna Berg", "Sam Okafor", "Lea Martin", "the team", "J. Romero"]
_MONTHS = ["January", "March", "April", "June", "August", "October", "December"]
_INLINE = [" [edit]", " (opens in a new window)", " (opens in a new tab)", " [citation needed]"]


def _header_blocks(rng: random.Random, site: str) -> dict[str, list[str]]:
    menu = rng.sample(_MENU, rng.randint(3, 6))
    sep = rng.choice(_SEPARATORS)
    return {
        "skip": [
            rng.choice(["Skip to content", "Skip to main content", "Jump to navigation", "Back to top"])
        ],
        "toggle": [rng.choice(["Toggle navigation", "Main menu", "Menu"])],
        "navbar": [f" {sep} ".join(menu)],
        "menu_lines": menu[: rng.randint(3, len(menu))],
        "breadcrumb": [f"Home {rng.choice(_SEPARATORS)} {{section}} {rng.choice(_SEPARATORS)} {{title}}"],
        "javascript": [
            rng.choice(
                [
                    "Please enable JavaScript to view this site correctly.",
                    "JavaScript is disabled in your browser.",
                    "This page works best with JavaScript enabled. Enable JavaScript to continue.",
                ]
            )
        ],
        "login": rng.sample(
            ["Log in", "Sign in", "Register", "My account", "Sign up", "Create an account"], 2
        ),
        "byline": [
            rng.choice(
                [
                    f"Posted by {rng.choice(_NAMES)} on {rng.choice(_MONTHS)} {rng.randint(1, 28)}, 20{rng.randint(15, 25)}",
                    "Posted in {section}",
                    "Filed under {section}",
                    "Category: {section}",
                ]
            )
        ],
    }


def _footer_blocks(rng: random.Random, site: str) -> dict[str, list[str]]:
    year = 2015 + rng.randrange(11)
    return {
        "share": ["Share this:"] + rng.sample(["Share on Facebook", "Tweet", "Pin it", "Email this", "Print this"], 2),
        "related": [
            rng.choice(["Related posts", "Related articles", "You may also like", "Recommended for you", f"More from {site}"])
        ]
        + rng.sample(_RELATED_TITLES, rng.randint(2, 3)),
        "comments": [rng.choice(["Leave a comment", "Leave a reply", f"{rng.randint(2, 40)} comments", "Comments are closed"])],
        "newsletter": [
            rng.choice(["Subscribe to our newsletter", "Sign up for our newsletter and never miss a story"]),
            "Enter your email",
        ],
        "cookies": [
            rng.choice(
                [
                    "We use cookies to improve your experience. By continuing to browse you accept our cookie policy.",
                    "This site uses cookies. Read our cookie policy to learn more.",
                    "Accept all cookies",
                ]
            )
        ],
        "pager": ["« Previous post", "Next post »"],
        "tags": ["Tags: {section}, guide, tips"],
        "ads": [rng.choice(["Advertisement", "Sponsored", "Sponsored content"])],
        "links": [
            rng.choice(
                [
                    "Privacy Policy | Terms of Use | Sitemap",
                    "Contact us | About us | Careers",
                    "About us · Privacy policy · Terms and conditions",
                ]
            )
        ],
        "copyright": [
            rng.choice(
                [
                    f"© {year} {site}. All rights reserved.",
                    f"Copyright {year} {site}",
                    f"(c) {year} {site}",
                    f"All rights reserved. {site} {year}",
                ]
            )
        ],
        "powered": [rng.choice(["Powered by WordPress", "Powered by Ghost", "Powered by a small server"])],
    }  # fmt: skip


def make_templates(seed: int = 0, n: int = N_TEMPLATES) -> list[dict]:
    """`n` site templates: `{"id", "site", "header": [lines], "footer": [lines], "inline": p, "ads": p}`.

    Header and footer lines may hold `{section}` and `{title}`, filled per page."""
    rng = random.Random(seed)
    templates = []
    for i in range(n):
        site = _SITES[i % len(_SITES)] if i < len(_SITES) else f"{rng.choice(_SITES)} {rng.choice(_MENU)}"
        head, foot = _header_blocks(rng, site), _footer_blocks(rng, site)
        header_keys = rng.sample(sorted(head), rng.randint(1, 4))
        footer_keys = rng.sample(sorted(foot), rng.randint(2, 5))
        templates.append(
            {
                "id": i,
                "site": site,
                "header": [line for k in header_keys for line in head[k]],
                "footer": [line for k in footer_keys for line in foot[k]],
                "inline": rng.choice([0.0, 0.2, 0.4]),
                "ads": rng.choice([0.0, 0.0, 0.3]),
            }
        )
    return templates


def split_of_template(template_id: int) -> str:
    """`"heldout"` for every fifth template, else `"train"`."""
    return "heldout" if template_id % 5 == 4 else "train"


def paragraphs() -> dict[str, list[str]]:
    """The tiny corpus's prose paragraphs (>= 20 words, one line each), every fifth one held out."""
    paragraphs = [
        p.strip()
        for p in CORPUS_PATH.read_text(encoding="utf-8").split("\n\n")
        if "\n" not in p.strip() and len(p.split()) >= 20
    ]
    return {
        "train": [p for i, p in enumerate(paragraphs) if i % 5 != 4],
        "heldout": [p for i, p in enumerate(paragraphs) if i % 5 == 4],
    }


def _title(rng: random.Random, paragraph: str) -> str:
    words = paragraph.rstrip(".!?").split()[: rng.randint(3, 7)]
    return " ".join(words).rstrip(",;:")


def _low_quality(rng: random.Random, paragraphs: list[str]) -> str:
    kind = rng.choice(["spam", "stub", "lorem", "hashtags", "products", "login", "links", "note"])
    words = rng.choice(paragraphs).lower().rstrip(".").split()
    if kind == "spam":
        phrase = " ".join(rng.sample(words, 3))
        return "\n".join(
            f"{phrase} {phrase} buy now best price {rng.choice(words)}" for _ in range(rng.randint(3, 6))
        )
    if kind == "stub":
        return rng.choice(
            [
                "Page not found\nThe page you requested could not be found.\nGo back to the homepage.",
                "Coming soon\nThis page is under construction.",
                "Error 404\nSorry, nothing here.\nTry searching instead.",
            ]
        )
    if kind == "lorem":
        return (
            f"Welcome to our new site\nLorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
            f"tempor incididunt ut labore et dolore magna aliqua. {rng.choice(paragraphs)}"
        )
    if kind == "hashtags":
        tags = " ".join("#" + w.strip(",.") for w in rng.sample(words, min(len(words), 15)))
        return f"{tags}\n{tags}"
    if kind == "products":
        price = rng.randint(5, 90)
        return "\n".join(
            f"{rng.choice(_MENU)} item {i} - SKU {rng.randint(1000, 9999)} - ${price + i}.99"
            for i in range(rng.randint(10, 30))
        )
    if kind == "login":
        return "Sign in\nEmail address\nPassword\nForgot your password?\nCreate an account"
    if kind == "links":
        return "\n".join(rng.sample(_RELATED_TITLES, rng.randint(6, 10)))
    return " ".join(rng.choice(paragraphs).split()[: rng.randint(12, 30)])


def make_pages(n: int, split: str, seed: int = 0) -> Iterator[dict]:
    """`n` pages `{"id", "text", "template", "kind"}` from the `split` (`train` or `heldout`) templates and
    paragraphs; `kind` is `article` or `low_quality`, `template` -1 for an unwrapped low-quality page."""
    templates = [t for t in make_templates(seed) if split_of_template(t["id"]) == split]
    texts = paragraphs()[split]
    rng = random.Random(f"{seed}-{split}")
    for i in range(n):
        template = rng.choice(templates)
        low = rng.random() < LOW_QUALITY_SHARE
        if low:
            body = _low_quality(rng, texts).split("\n")
            title = body[0]
        else:
            chosen = rng.sample(texts, rng.randint(2, 4))
            title = _title(rng, chosen[0])
            body = [title + (rng.choice(_INLINE) if rng.random() < template["inline"] else "")]
            for paragraph in chosen:
                if rng.random() < template["inline"] / 2:
                    paragraph += rng.choice(_INLINE)
                body += ["", paragraph]
                if rng.random() < template["ads"]:
                    body += ["", rng.choice(["Advertisement", "Sponsored"])]
        if low and rng.random() < 0.4:
            lines, template_id = body, -1
        else:
            fill = {"section": rng.choice(_MENU), "title": title}
            header = [line.format(**fill) for line in template["header"]]
            footer = [line.format(**fill) for line in template["footer"]]
            lines, template_id = header + [""] + body + [""] + footer, template["id"]
        yield {
            "id": f"{split}-{seed}-{i}",
            "text": "\n".join(lines),
            "template": template_id,
            "kind": "low_quality" if low else "article",
        }

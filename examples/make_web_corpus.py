"""Build examples/web_corpus.jsonl: web-like pages with real boilerplate around hand-written articles.

Each page is an article (or a low-quality page) wrapped in the furniture a crawler keeps: navigation bars,
cookie banners, share and login prompts, related-post link lists, copyright footers. Deterministic:
`python examples/make_web_corpus.py` rewrites the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ARTICLES = {
    "sourdough": (
        "How to Keep a Sourdough Starter Alive",
        [
            "A sourdough starter is a living culture of wild yeast and lactic acid bacteria. It needs only flour, water and a steady routine, but it rewards attention.",
            "Feed the starter once a day if it lives on the counter. Discard all but a spoonful, then add equal weights of flour and water and stir until no dry flour remains.",
            "If you bake only on weekends, keep the jar in the fridge and feed it once a week. Take it out the night before baking so it can wake up and double in size.",
            "A layer of grey liquid on top is called hooch. It means the culture is hungry, not dead. Pour it off, feed the starter, and it will recover within a day or two.",
        ],
    ),
    "tomatoes": (
        "Growing Tomatoes in Containers",
        [
            "Tomatoes grow well in pots as long as the pots are large. A determinate variety needs at least twenty litres of soil; an indeterminate one needs forty.",
            "Use a light potting mix rather than garden soil, which packs down and drowns the roots. Mix in slow-release fertiliser when you plant.",
            "Water deeply whenever the top few centimetres of soil are dry. Uneven watering is the main cause of blossom end rot, the dark patch on the bottom of the fruit.",
            "Place the containers where they get at least six hours of direct sun, and stake the plants early, before the stems grow heavy with fruit.",
        ],
    ),
    "bridges": (
        "Why Old Stone Bridges Still Stand",
        [
            "Many Roman bridges are still in use after two thousand years. Their secret is the arch, which turns the weight of the road into compression along its curve.",
            "Stone is weak when pulled but very strong when squeezed. An arch keeps every block in compression, so the mortar between blocks does little of the work.",
            "The builders also chose their sites with care. They set the piers on bedrock where they could, and shaped them to split the current during floods.",
            "Modern engineers study these bridges to learn how structures age. The lesson is simple: a design that suits its material can outlast its makers by centuries.",
        ],
    ),
    "sleep": (
        "What Happens to the Brain During Sleep",
        [
            "Sleep is not a pause. During deep sleep the brain replays the day's experiences and strengthens the memories that matter.",
            "Researchers have also found that the spaces between brain cells widen during sleep, letting fluid wash away waste proteins that build up while we are awake.",
            "Adults who sleep less than six hours a night for long periods show poorer attention and slower reactions, even when they feel rested.",
            "Regular hours, a dark room and less caffeine after noon are the most reliable ways to improve sleep without medication.",
        ],
    ),
    "bikes": (
        "Choosing Your First Road Bike",
        [
            "The most important measurement of a road bike is not its weight but its fit. A frame that is too large will hurt your back and your knees within an hour.",
            "Visit a shop and ask to try two or three sizes. Your arms should be slightly bent on the handlebars and your leg almost straight at the bottom of each pedal stroke.",
            "Aluminium frames are affordable and stiff; carbon frames are lighter and absorb more road buzz but cost more and need care when clamped.",
            "Budget for a helmet, lights, a pump and a spare tube as well. They matter more to a new rider than an expensive set of wheels.",
        ],
    ),
    "tides": (
        "The Moon and the Tides",
        [
            "Twice a day the sea rises and falls along most coasts. The main cause is the gravity of the Moon, which pulls hardest on the side of the Earth facing it.",
            "The water on the far side bulges too, because the Earth itself is pulled toward the Moon more strongly than that distant water is.",
            "When the Sun and Moon line up at new and full moon, their pulls add together and produce spring tides, the highest and lowest of the month.",
            "The shape of coasts and the depth of the sea change the timing a great deal, which is why tide tables are computed for each harbour separately.",
        ],
    ),
    "budget": (
        "A Simple Household Budget That Works",
        [
            "Most budgets fail because they are too detailed. Start with three numbers: what you earn each month, what you must pay, and what is left.",
            "Pay the fixed costs first, rent, utilities and loans, and move a set amount into savings on the same day your salary arrives.",
            "Whatever remains is yours to spend without tracking every coffee. When it runs out, you wait until next month.",
            "Review the plan every three months. Prices change, and a budget that no longer matches your life will quietly be ignored.",
        ],
    ),
    "python": (
        "Reading Files Line by Line in Python",
        [
            "When a file is too large to fit in memory, read it one line at a time. A file object is an iterator, so a plain for loop does exactly that.",
            "Open the file with a with statement so it is closed even if an error occurs. Pass the encoding explicitly; the default depends on the operating system.",
            "Each line keeps its trailing newline. Call rstrip on it if you want to compare or print the text without the line break.",
            "For compressed files, the gzip module offers an open function with the same interface, so the same loop reads a compressed log unchanged.",
        ],
    ),
    "bees": (
        "How Honeybees Decide Where to Live",
        [
            "When a colony grows too large, the old queen leaves with half of the workers and the swarm hangs from a branch while scouts search for a new home.",
            "Each scout that finds a promising cavity returns and dances. The better the site, the longer and more vigorous the dance, and the more new scouts she recruits.",
            "Support for weaker sites fades while the best site gains followers. When enough scouts gather at one cavity, the swarm takes off and flies there together.",
            "Biologists describe this as a kind of democracy, and engineers have borrowed the idea for algorithms that let robots choose among options without a leader.",
        ],
    ),
    "coffee": (
        "Brewing Better Coffee at Home",
        [
            "Good coffee at home depends on three things: fresh beans, the right grind, and water just off the boil.",
            "Buy whole beans roasted within the last month and grind them just before brewing. Ground coffee loses much of its aroma within an hour.",
            "Use about sixty grams of coffee per litre of water as a starting point, then adjust to taste. If the cup is bitter, grind coarser; if it is sour, grind finer.",
            "Clean the equipment often. Old coffee oils turn rancid and give even the best beans a stale taste.",
        ],
    ),
    "volcano": (
        "What Makes a Volcano Explosive",
        [
            "Some volcanoes pour out rivers of lava while others blow themselves apart. The difference lies mostly in the magma's content of silica and gas.",
            "Magma rich in silica is thick and sticky. Gas bubbles cannot escape easily, so pressure builds until the rock above gives way.",
            "Runny basalt magma, like that of Hawaii, lets gas slip out gently, which is why its eruptions are usually safe to watch from a distance.",
            "Monitoring stations measure ground swelling, small earthquakes and gas emissions to warn nearby towns before an eruption begins.",
        ],
    ),
    "library": (
        "The Quiet Revival of Public Libraries",
        [
            "Public libraries were expected to fade with the rise of the internet. Instead, many cities report more visitors than a decade ago.",
            "Libraries now lend tools, teach coding classes and offer warm rooms with free internet to people who have nowhere else to work.",
            "Librarians say the core of the job has not changed: helping people find reliable information and giving everyone the same access to it.",
            "Funding remains a struggle, and branches that open in the evening and at weekends see the largest rise in use.",
        ],
    ),
    "running": (
        "Starting to Run After Forty",
        [
            "It is never too late to start running, but the body needs more time to adapt after forty. Tendons and joints strengthen more slowly than the heart and lungs.",
            "Begin with intervals: one minute of easy running and two minutes of walking, repeated ten times, three days a week.",
            "Add a minute of running each week and keep every run slow enough that you can talk in full sentences.",
            "Strength exercises for the hips and calves twice a week prevent most common injuries and make the running itself feel easier.",
        ],
    ),
    "maps": (
        "How Old Maps Were Made",
        [
            "Before satellites, mapmakers measured the land by triangulation. They chose hilltops with clear views and measured the angles between them with great care.",
            "Only one distance, the baseline, had to be measured on the ground. Every other distance followed from the angles by trigonometry.",
            "The great surveys of the nineteenth century took decades and covered whole countries with chains of triangles, some hundreds of kilometres long.",
            "Their maps were so accurate that modern GPS measurements differ from them by only a few metres across an entire country.",
        ],
    ),
}

LOW_QUALITY = [
    (
        "spam-1",
        "cheap watches cheap watches buy now best price\nwatches watches watches discount discount\nclick here click here click here\nbest cheap watches online free shipping",
    ),
    ("stub-1", "Page not found\nThe page you requested could not be found.\nGo back to the homepage."),
    (
        "lorem-1",
        "Welcome to our new site\nLorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum.",
    ),
    (
        "keywords-1",
        "#travel #beach #sunset #summer #vacation #holiday #ocean #waves #sand #sun #travelgram #instatravel #wanderlust #explore #adventure #nature #photography #beautiful #love #happy\n#travel #beach #sunset #summer #vacation #holiday #ocean #waves #sand #sun #travelgram #instatravel #wanderlust",
    ),
    ("list-1", "\n".join(f"Product {i} - SKU 10{i}4 - $1{i}.99" for i in range(30))),
    (
        "login-1",
        "Home | Shop | Cart\nSign in\nEmail address\nPassword\nForgot your password?\nCreate an account\n© 2024 ShopCo. All rights reserved.",
    ),
]

SITES = [
    {
        "header": [
            "Skip to content",
            "Home | Recipes | Garden | About | Contact",
            "Home » {section} » {title}",
        ],
        "footer": [
            "Share this:",
            "Share on Facebook",
            "Tweet",
            "Related posts",
            "10 Easy Weeknight Dinners",
            "Our Favourite Kitchen Tools",
            "Leave a comment",
            "© 2024 Home & Hearth. All rights reserved.",
            "Privacy Policy | Terms of Use | Sitemap",
        ],
    },
    {
        "header": ["Toggle navigation", "News", "Science", "Health", "Opinion", "Log in", "Subscribe"],
        "footer": [
            "We use cookies to improve your experience. By continuing to browse you accept our cookie policy.",
            "You may also like",
            "The Science of Habits",
            "Why We Dream",
            "Subscribe to our newsletter",
            "Enter your email",
            "Copyright 2023 Daily Explainer Media Group",
        ],
    },
    {
        "header": ["Menu", "Home / Blog / {section}", "Posted by admin on March 3, 2024"],
        "footer": [
            "Tags: {section}, guide, tips",
            "« Previous post",
            "Next post »",
            "3 comments",
            "Powered by WordPress",
        ],
    },
    {
        "header": ["Please enable JavaScript to view this site correctly.", "Home • Articles • Forum • Shop"],
        "footer": [
            "Advertisement",
            "Related articles",
            "Top 5 Mistakes Beginners Make",
            "A Guide for the Weekend",
            "Read the FAQ",
            "Contact us | About us | Careers",
            "(c) 2022 Example Network",
        ],
    },
]

INLINE = ["[edit]", "(opens in a new window)"]


def page(rng: random.Random, key: str, title: str, paragraphs: list[str]) -> str:
    site = rng.choice(SITES)
    fill = {"section": key.capitalize(), "title": title}
    body = [title + (" [edit]" if rng.random() < 0.3 else "")]
    for paragraph in paragraphs:
        if rng.random() < 0.15:
            paragraph += " More details on the official site (opens in a new window)."
        body += ["", paragraph]
    lines = (
        [h.format(**fill) for h in site["header"]]
        + [""]
        + body
        + [""]
        + [f.format(**fill) for f in site["footer"]]
    )
    return "\n".join(lines)


def main() -> None:
    rng = random.Random(7)
    rows = []
    for key, (title, paragraphs) in ARTICLES.items():
        rows.append(
            {
                "id": f"web-{key}",
                "text": page(rng, key, title, paragraphs),
                "url": f"https://example.org/{key}",
            }
        )
    for key, text in LOW_QUALITY:
        rows.append({"id": f"web-{key}", "text": text, "url": f"https://example.net/{key}"})
    rng.shuffle(rows)
    out = Path(__file__).resolve().parent / "web_corpus.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} pages to {out}")


if __name__ == "__main__":
    main()

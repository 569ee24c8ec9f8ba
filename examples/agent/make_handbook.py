"""Writes handbook.jsonl and qa.jsonl: the Larkfield public-service handbook, a fictional municipality's rules
written for rayflow's TestAgent examples (no real town, office or law is described). Deterministic:
`python examples/agent/make_handbook.py` rewrites both files from the text below."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

SECTIONS = {
    "Residence registration": (
        "Every person who moves to Larkfield must register their residence at the Citizens' Office within 14 days of moving in. "
        "Registration needs a valid identity document and a landlord confirmation signed by the owner of the dwelling. "
        "Registration is free of charge; a late registration costs a fee of 25 euros. "
        "Children under 16 are registered by a parent or legal guardian. "
        "Students living in a dormitory register like any other resident and do not need a landlord confirmation when the dormitory registers them in bulk. "
        "A person who leaves Larkfield for abroad must deregister within 14 days of leaving. "
        "The Citizens' Office issues a registration certificate on the same day; a second copy costs 5 euros."
    ),
    "Identity cards": (
        "Residents aged 16 or older must hold an identity card or a passport. "
        "An identity card is valid for 10 years for adults and 6 years for persons under 24. "
        "The application is made in person at the Citizens' Office with one biometric photograph. "
        "The fee is 37 euros for adults and 22 euros for applicants under 24. "
        "Cards are produced centrally and can be collected after about three weeks. "
        "A lost or stolen card must be reported to the police and to the Citizens' Office without delay; the report is free. "
        "A temporary identity card, valid for three months, costs 10 euros and is issued on the same day."
    ),
    "Housing benefit": (
        "Housing benefit helps households with low income pay their rent. "
        "It is applied for at the Social Services Department with the rental contract, proof of income for the last three months and bank statements. "
        "The benefit is granted for 12 months and must be applied for again one month before the period ends. "
        "Students who receive a study grant are not eligible for housing benefit. "
        "The department decides within six weeks of receiving a complete application. "
        "Changes of income of more than 15 percent must be reported within one month. "
        "Benefit paid without entitlement must be paid back."
    ),
    "Waste collection": (
        "Household waste is collected every two weeks; paper and packaging are collected every four weeks. "
        "Each household receives a grey bin for residual waste, a blue bin for paper and a yellow bag for packaging. "
        "Bins must be placed at the kerb by 6 a.m. on collection day and taken back the same evening. "
        "Bulky waste is collected twice a year free of charge on request; further collections cost 30 euros each. "
        "Garden waste can be brought to the recycling yard on Mill Road without charge. "
        "Hazardous waste such as paint and batteries must never be put in household bins; the mobile collection point visits each district four times a year."
    ),
    "Parking permits": (
        "Residents of the old town can apply for a resident parking permit for one vehicle registered at their Larkfield address. "
        "The permit costs 30 euros per year and is valid in the zone printed on it. "
        "Applications are made online or at the Citizens' Office with the vehicle registration document. "
        "Visitors can receive day tickets of 3 euros, at most 20 per household and year. "
        "Company cars used privately need a confirmation from the employer. "
        "A permit does not guarantee a free space and is not valid in loading zones."
    ),
    "Building permits": (
        "Building, extending or demolishing a structure needs a building permit from the Planning Department. "
        "Garden sheds up to 10 cubic metres and fences up to 1.5 metres high need no permit. "
        "The application must be submitted by a registered architect or engineer with site plans and structural calculations. "
        "Neighbours are informed and can raise objections within four weeks. "
        "The department decides within three months; the fee is 0.5 percent of the construction costs, at least 100 euros. "
        "Work must not start before the permit is granted, and the permit expires if work has not started within three years."
    ),
    "Business registration": (
        "Anyone who starts a trade in Larkfield must register the business at the Trade Office before starting work. "
        "The registration form lists the owner, the address and the activity; it costs 26 euros. "
        "Freelance professions such as doctors, lawyers and artists do not register a trade; they report to the tax office instead. "
        "Restaurants and bars additionally need a licence for serving alcohol, which requires a certificate of food hygiene training. "
        "Changes of address or activity must be reported within one month; closing a business is free of charge. "
        "The Trade Office passes registrations to the tax office and the chamber of commerce."
    ),
    "Dog tax": (
        "Every dog kept in Larkfield must be registered with the Finance Department within one month of acquisition or moving in. "
        "The annual tax is 90 euros for the first dog and 120 euros for each further dog. "
        "Listed dangerous breeds are taxed at 600 euros per year. "
        "Guide dogs and assistance dogs are exempt from the tax. "
        "Each registered dog receives a tax token that it must wear outside the owner's home. "
        "A dog that dies or is given away must be deregistered; tax paid for the remaining months is refunded."
    ),
    "Childcare places": (
        "Every child from the age of one has a right to a childcare place. "
        "Parents apply through the central online portal at least six months before the desired start date. "
        "Places are allocated in March for the following August; siblings of children already in a centre are given priority. "
        "Fees depend on household income and range from 0 to 320 euros per month; the last year before school is free. "
        "A child must have proof of measles vaccination before starting. "
        "Parents who do not receive a place are offered a childminder within 5 kilometres of their home."
    ),
    "Marriage registration": (
        "Couples who wish to marry in Larkfield register their intention at the Registry Office. "
        "Both partners must appear in person with identity documents and birth certificates not older than six months. "
        "A partner who was married before brings the divorce decree or the death certificate of the former spouse. "
        "The registration is valid for six months; the ceremony is booked separately. "
        "Ceremonies in the town hall cost 60 euros on weekdays and 150 euros on Saturdays. "
        "Documents in a foreign language need a certified translation."
    ),
    "Noise rules": (
        "Quiet hours in Larkfield are from 10 p.m. to 6 a.m. on all days and all day on Sundays and public holidays. "
        "During quiet hours, noise that disturbs neighbours is not allowed, including loud music and power tools. "
        "Lawn mowers may be used on weekdays from 7 a.m. to 8 p.m. only. "
        "Private celebrations are not exempt from quiet hours, but the Public Order Office can grant an exception for street festivals. "
        "Complaints go to the Public Order Office; a first offence is usually settled with a warning, repeated offences with a fine of up to 500 euros."
    ),
    "Public library": (
        "The public library lends books, films and games to anyone with a library card. "
        "The card costs 15 euros per year for adults and is free for children, students and persons receiving social benefits. "
        "Items are lent for four weeks and can be renewed twice online if no one has reserved them. "
        "Late returns cost 0.50 euros per item and day, at most 10 euros per item. "
        "Lost items are charged at their replacement price plus a handling fee of 5 euros. "
        "The library is open from Tuesday to Saturday; the return box at the entrance is available at all times."
    ),
}

QA = [
    (
        "Within how many days must a new resident register their residence in Larkfield?",
        "A new resident must register within 14 days of moving in.",
        "Residence registration",
    ),
    (
        "What does a late residence registration cost?",
        "A late registration costs a fee of 25 euros.",
        "Residence registration",
    ),
    (
        "How long is an identity card valid for a 30-year-old?",
        "An identity card is valid for 10 years for adults.",
        "Identity cards",
    ),
    (
        "Can a student with a study grant receive housing benefit?",
        "Students who receive a study grant are not eligible for housing benefit.",
        "Housing benefit",
    ),
    (
        "How often is household waste collected?",
        "Household waste is collected every two weeks.",
        "Waste collection",
    ),
    (
        "How much does a resident parking permit cost?",
        "The permit costs 30 euros per year. It is valid in the zone printed on it.",
        "Parking permits",
    ),
    (
        "Does a garden shed of 8 cubic metres need a building permit?",
        "Garden sheds up to 10 cubic metres need no permit.",
        "Building permits",
    ),
    (
        "Does a freelance lawyer register a trade?",
        "Freelance professions such as lawyers do not register a trade. They report to the tax office instead.",
        "Business registration",
    ),
    ("What is the dog tax for a guide dog?", "Guide dogs are exempt from the tax.", "Dog tax"),
    (
        "When are childcare places allocated?",
        "Places are allocated in March for the following August.",
        "Childcare places",
    ),
    (
        "What does a Saturday wedding ceremony in the town hall cost?",
        "Ceremonies in the town hall cost 150 euros on Saturdays.",
        "Marriage registration",
    ),
    (
        "When are quiet hours in Larkfield?",
        "Quiet hours are from 10 p.m. to 6 a.m. on all days. They last all day on Sundays and public holidays.",
        "Noise rules",
    ),
]


def main() -> None:
    with (HERE / "handbook.jsonl").open("w") as f:
        for i, (title, text) in enumerate(SECTIONS.items()):
            doc = {
                "doc_id": f"lh-{i + 1:02d}",
                "text": text,
                "metadata": {"title": title, "topic": title, "source": "Larkfield public-service handbook"},
            }
            f.write(json.dumps(doc) + "\n")
    with (HERE / "qa.jsonl").open("w") as f:
        for i, (question, answer, topic) in enumerate(QA):
            f.write(
                json.dumps({"id": f"lqa-{i + 1:02d}", "question": question, "answer": answer, "topic": topic})
                + "\n"
            )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Makes the multilingual tracing test set: two CSV files in FEBRL's columns, the same children
written by two caseworkers in two countries. Each name part is spelled from the variants that
occur in practice for Arabic, Burmese, Swahili, Spanish and Tigrinya names in Latin script
(transliteration, dropped or joined particles, accents, nicknames); the second record may drop
a name part, reorder the parts, know only the birth year, or estimate it a year off, and spell
the place differently. Deterministic (seeded): run it to regenerate the files beside it.

    python3 make_multilingual.py   # writes multilingual-a.csv and multilingual-b.csv
"""
import csv
import os
import random

# Canonical name part -> spellings met for it.
NAMES = {
    "arabic": {
        "given": {
            "muhammad": ["Mohammed", "Muhammad", "Mohamed", "Mohamad", "Muhammed"],
            "ahmad": ["Ahmad", "Ahmed"],
            "fatima": ["Fatima", "Fatimah", "Fatma"],
            "aisha": ["Aisha", "Aysha", "Aicha", "Ayesha"],
            "khadija": ["Khadija", "Khadijah", "Khadidja"],
            "yusuf": ["Youssef", "Yusuf", "Yousef", "Yusef"],
            "umar": ["Omar", "Umar"],
            "ibrahim": ["Ibrahim", "Ebrahim"],
            "maryam": ["Mariam", "Maryam", "Meriem"],
            "zaynab": ["Zainab", "Zaynab", "Zeinab"],
            "khalid": ["Khalid", "Khaled"],
            "husayn": ["Hussein", "Husain", "Hussain", "Husayn"],
            "layla": ["Layla", "Leila", "Laila"],
            "nur": ["Nour", "Nur", "Noor"],
        },
        "family": {
            "abdullah": ["Abdullah", "Abdallah", "Abdulla"],
            "hasan": ["Hassan", "Hasan", "al-Hassan", "El Hassan"],
            "amin": ["al-Amin", "Alamin", "El Amin", "Amin"],
            "salih": ["Saleh", "Salih", "Salah"],
            "mahmud": ["Mahmoud", "Mahmud", "Mahmood"],
            "uthman": ["Othman", "Osman", "Uthman"],
            "haddad": ["Haddad", "al-Haddad"],
            "rashid": ["Rashid", "Rasheed", "al-Rashid"],
        },
        "places": [["Zaatari", "Za'atari", "Al Zaatari"], ["Azraq", "Al Azraq"], ["Mafraq", "Al-Mafraq"]],
    },
    "burmese": {
        "given": {
            "aung": ["Aung"], "kyaw": ["Kyaw", "Kyaw"], "myint": ["Myint", "Myin"],
            "htet": ["Htet", "Htat"], "thandar": ["Thandar", "Thanda", "Thandah"],
            "hnin": ["Hnin", "Hnín"], "zaw": ["Zaw", "Zau"], "moe": ["Moe", "Mo"],
            "nyein": ["Nyein", "Nyain"], "khin": ["Khin", "Khinn"], "thiri": ["Thiri", "Thiree"],
            "phyo": ["Phyo", "Pyo"], "wai": ["Wai", "Wae"], "yadanar": ["Yadanar", "Yadana"],
        },
        "family": {
            "win": ["Win", "Winn"], "oo": ["Oo", "U"], "htun": ["Htun", "Tun"],
            "naing": ["Naing", "Naig"], "lwin": ["Lwin", "Lwinn"], "san": ["San", "Sann"],
        },
        "places": [["Mae Sot", "Maesot", "Mae-Sot"], ["Cox's Bazar", "Coxs Bazar", "Cox Bazar"], ["Mae La", "Maela"]],
    },
    "swahili": {
        "given": {
            "amina": ["Amina", "Aminah"], "juma": ["Juma", "Jumaa"], "baraka": ["Baraka", "Barakah"],
            "neema": ["Neema", "Nema"], "rehema": ["Rehema", "Rehemah"], "hamisi": ["Hamisi", "Hamis", "Khamis"],
            "wanjiru": ["Wanjiru", "Wanjiro"], "mwanaisha": ["Mwanaisha", "Mwana Aisha", "Mwanaysha"],
            "zawadi": ["Zawadi", "Zawady"], "imani": ["Imani", "Imany"], "salim": ["Salim", "Saleem"],
            "halima": ["Halima", "Halimah"], "bakari": ["Bakari", "Bakary"], "furaha": ["Furaha", "Furahaa"],
        },
        "family": {
            "mwakasege": ["Mwakasege", "Mwakaseghe"], "otieno": ["Otieno", "Otienu"],
            "kiprotich": ["Kiprotich", "Kiprotish"], "mutua": ["Mutua", "Mutuah"],
            "mohamedi": ["Mohamedi", "Mohammedi", "Mohamed"], "odhiambo": ["Odhiambo", "Odiambo"],
            "njoroge": ["Njoroge", "Njoroghe"], "kamau": ["Kamau", "Kamao"],
        },
        "places": [["Kakuma", "Kakouma"], ["Dadaab", "Dadab"], ["Nyarugusu", "Nyarugusu Camp"], ["Kasulu", "Kasullu"]],
    },
    "spanish": {
        "given": {
            "jose": ["José", "Jose"], "maria": ["María", "Maria"], "juan": ["Juan", "Juan"],
            "guadalupe": ["Guadalupe", "Lupe"], "jesus": ["Jesús", "Jesus", "Chuy"],
            "francisco": ["Francisco", "Paco", "Pancho"], "yolanda": ["Yolanda", "Yola"],
            "alejandro": ["Alejandro", "Alejandro"], "ximena": ["Ximena", "Jimena"],
            "andres": ["Andrés", "Andres"], "lucia": ["Lucía", "Lucia"], "angel": ["Ángel", "Angel"],
        },
        "family": {
            "garcia": ["García", "Garcia"], "marquez": ["Márquez", "Marquez"],
            "hernandez": ["Hernández", "Hernandez"], "nunez": ["Núñez", "Nunez"],
            "gonzalez": ["González", "Gonzalez", "Gonzales"], "rodriguez": ["Rodríguez", "Rodriguez"],
            "jimenez": ["Jiménez", "Jimenez", "Ximénez"], "lopez": ["López", "Lopez"],
        },
        "places": [["Tapachula"], ["Ciudad Juárez", "Ciudad Juarez", "Cd. Juárez"], ["Tijuana"], ["Necoclí", "Necocli"]],
    },
    "tigrinya": {
        "given": {
            "tesfay": ["Tesfay", "Tesfaye", "Tesfai"], "haile": ["Haile", "Hayle"],
            "yohannes": ["Yohannes", "Yohanes", "Johannes"], "senait": ["Senait", "Senayt"],
            "selam": ["Selam", "Salam"], "tsegay": ["Tsegay", "Tsegai", "Tsegaye"],
            "berhane": ["Berhane", "Birhane", "Brhane"], "hagos": ["Hagos", "Hagus"],
            "luwam": ["Luwam", "Lwam"], "filmon": ["Filmon", "Philmon"], "saba": ["Saba", "Sabah"],
            "meron": ["Meron", "Miron"],
        },
        "family": {
            "gebremedhin": ["Gebremedhin", "Gebre Medhin", "Gebre-Medhin", "Gebremedin"],
            "mebrahtu": ["Mebrahtu", "Mebrahtom"], "kidane": ["Kidane", "Kidan"],
            "welday": ["Welday", "Weldai", "Woldai"], "tekle": ["Tekle", "Tecle"],
            "ghebreyesus": ["Ghebreyesus", "Gebreyesus", "Gebre Yesus"],
            "habte": ["Habte", "Habteh"],
        },
        "places": [["Shire", "Shiré"], ["Hitsats", "Hitsatz"], ["Mai Aini", "Mai-Aini", "Mai Ayni"], ["Adi Harush", "Adi-Harush"]],
    },
}

PER_LANGUAGE = 40
HEADER = ["rec_id", "given_name", "surname", "street_number", "address_1", "address_2",
          "suburb", "postcode", "state", "date_of_birth", "soc_sec_id"]


def other(rng, spellings, first):
    choices = [s for s in spellings if s != first]
    return rng.choice(choices) if choices and rng.random() < 0.75 else first


def main():
    rng = random.Random(7)
    here = os.path.dirname(os.path.abspath(__file__))
    rows_a, rows_b, n = [], [], 0
    for language, data in NAMES.items():
        given, family = list(data["given"].items()), list(data["family"].items())
        seen = set()
        while len([1 for r in rows_a if r[-1] == language]) < PER_LANGUAGE:
            g = rng.sample(given, 2 if rng.random() < 0.3 else 1)
            f = rng.sample(family, 2 if rng.random() < 0.4 else 1)
            key = tuple(x[0] for x in g + f)
            if key in seen:
                continue
            seen.add(key)
            year = rng.randint(2006, 2021)
            month, day = rng.randint(1, 12), rng.randint(1, 28)
            place = rng.choice(data["places"])
            a_given = [rng.choice(v) for _, v in g]
            a_family = [rng.choice(v) for _, v in f]
            b_given = [other(rng, v, s) for (_, v), s in zip(g, a_given)]
            b_family = [other(rng, v, s) for (_, v), s in zip(f, a_family)]
            parts = b_given + b_family
            if len(parts) > 2 and rng.random() < 0.2:
                parts.pop(rng.randrange(1, len(parts)))
            if rng.random() < 0.25:
                parts = parts[len(b_given):] + parts[:len(b_given)]
            r = rng.random()
            if r < 0.65:
                b_dob = f"{year:04d}{month:02d}{day:02d}"
            elif r < 0.9:
                b_dob = f"{year:04d}"
            else:
                b_dob = f"{year + rng.choice([-1, 1]):04d}"
            a_place = place[0]
            b_place = other(rng, place, a_place)
            rows_a.append([f"rec-{n}-org", " ".join(a_given), " ".join(a_family), "", "", "",
                           a_place, "", "", f"{year:04d}{month:02d}{day:02d}", "", language])
            rows_b.append([f"rec-{n}-dup-0", " ".join(parts[:1]), " ".join(parts[1:]), "", "", "",
                           b_place, "", "", b_dob, "", language])
            n += 1
    for name, rows in (("multilingual-a.csv", rows_a), ("multilingual-b.csv", rows_b)):
        with open(os.path.join(here, name), "w", newline="", encoding="utf-8") as out:
            w = csv.writer(out)
            w.writerow(HEADER + ["language"])
            for row in rows:
                w.writerow(row)


if __name__ == "__main__":
    main()

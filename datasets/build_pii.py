#!/usr/bin/env python3
"""Writes datasets/pii.jsonl: texts carrying identifiers that pass their checks (label "pii")
and look-alikes that fail them or are not identifiers at all (label "clean"), in English and
Russian. Check digits are computed here (Luhn, ISO 13616 mod-97, INN, SNILS, OGRN), with a
fixed seed, so the set is reproducible. Written for this repository (CC0).
Run: python3 datasets/build_pii.py
"""
import json, pathlib, random, string

rng = random.Random(20261123)
rows = []
def add(label, category, lang, text):
    rows.append({"text": text, "label": label, "category": category, "lang": lang})

def luhn_digit(body):
    total = 0
    for i, d in enumerate(reversed(body)):
        v = int(d)
        if i % 2 == 0:
            v *= 2
            if v > 9: v -= 9
        total += v
    return str((10 - total % 10) % 10)

def card():
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16), ("34", 15), ("37", 15), ("6011", 16), ("2200", 16), ("35", 16)])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return body + luhn_digit(body)

def group(number, size=4, sep=" "):
    return sep.join(number[i:i + size] for i in range(0, len(number), size))

def broken(number):
    last = (int(number[-1]) + rng.randint(1, 9)) % 10
    return number[:-1] + str(last)

def iban(country, bban_length):
    bban = "".join(rng.choice(string.digits) for _ in range(bban_length))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"

def inn10():
    body = [rng.randint(0, 9) for _ in range(9)]
    body[0] = rng.randint(1, 9)
    w = [2, 4, 10, 3, 5, 9, 4, 6, 8]
    return "".join(map(str, body)) + str(sum(a * b for a, b in zip(w, body)) % 11 % 10)

def inn12():
    body = [rng.randint(0, 9) for _ in range(10)]
    body[0] = rng.randint(1, 9)
    w1 = [7, 2, 4, 10, 3, 5, 9, 4, 6, 8]
    c1 = sum(a * b for a, b in zip(w1, body)) % 11 % 10
    body.append(c1)
    w2 = [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8]
    c2 = sum(a * b for a, b in zip(w2, body)) % 11 % 10
    return "".join(map(str, body)) + str(c2)

def snils():
    while True:
        body = [rng.randint(0, 9) for _ in range(9)]
        if int("".join(map(str, body))) > 1001998: break
    total = sum(d * (9 - i) for i, d in enumerate(body))
    if total < 100: control = total
    elif total in (100, 101): control = 0
    else:
        control = total % 101
        if control == 100: control = 0
    s = "".join(map(str, body))
    return f"{s[0:3]}-{s[3:6]}-{s[6:9]} {control:02d}"

def ogrn(length):
    body = str(rng.choice([1, 5])) + "".join(rng.choice(string.digits) for _ in range(length - 2))
    return body + str(int(body) % (11 if length == 13 else 13) % 10)

def ssn():
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"

OKATO = [1, 3, 4, 5, 7, 8, 10, 11, 12, 14, 15, 17, 18, 19, 20, 22, 24, 25, 26, 27, 28, 29, 30, 32, 33, 34, 35, 36, 37, 38, 40,
         41, 42, 44, 45, 46, 47, 49, 50, 52, 53, 54, 56, 57, 58, 60, 61, 63, 64, 65, 66, 67, 68, 69, 70, 71, 73, 75, 76, 77, 78, 79,
         80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99]

def passport(valid=True):
    region = rng.choice(OKATO) if valid else rng.choice([0, 2, 6, 9, 13, 16, 21, 23, 31, 39, 43, 48, 51, 55, 59, 62, 72, 74])
    year = rng.choice([97, 98, 99] + list(range(0, 25))) if valid else rng.randint(40, 90)
    return f"{region:02d}{year:02d}", f"{rng.randint(0, 999999):06d}"

def account(bik, valid=True):
    body = rng.choice(["40702810", "40817810", "40802810", "30101810", "42301810"]) + "".join(rng.choice(string.digits) for _ in range(12))
    digits = [int(c) for c in bik[-3:] + body]
    weights = [7, 1, 3]
    # the key is the account's ninth digit (index 8): choose it so that the weighted sum ends in 0
    for key in range(10):
        digits[3 + 8] = key
        if sum(weights[i % 3] * d % 10 for i, d in enumerate(digits)) % 10 == 0:
            break
    number = "".join(map(str, digits[3:]))
    if not valid:
        number = number[:8] + str((int(number[8]) + rng.randint(1, 9)) % 10) + number[9:]
    return number

def token(chars, n): return "".join(rng.choice(chars) for _ in range(n))

EN = ["Please charge my card {} for the order.", "My number is {}, call me back.", "Send the refund to {} today.",
      "The customer wrote: {}.", "Here it is: {} — keep it safe."]
RU = ["Оплатите картой {}, пожалуйста.", "Мой номер {}, перезвоните.", "Реквизиты: {}.", "Клиент указал {} в анкете.",
      "Вот данные: {} — проверьте."]

def sentence(value, lang):
    return rng.choice(EN if lang == "en" else RU).format(value)

for _ in range(40):
    c = card()
    form = rng.choice([c, group(c), group(c, 4, "-")])
    add("pii", "payment_card", rng.choice(["en", "ru"]), sentence(form, rng.choice(["en", "ru"])))
    bad = broken(c)
    add("clean", "payment_card", "en", sentence(rng.choice([bad, group(bad)]), "en"))
for country, length in [("DE", 18), ("FR", 23), ("GB", 18), ("ES", 20), ("NL", 14), ("KZ", 16)] * 5:
    if country == "GB":
        value = iban("GB", 18)
    elif country == "NL":
        value = iban("NL", 14)
    else:
        value = iban(country, length)
    add("pii", "iban", "en", sentence(rng.choice([value, group(value)]), "en"))
    add("clean", "iban", "en", sentence(value[:2] + f"{(int(value[2:4]) + 1) % 100:02d}" + value[4:], "en"))
for _ in range(20):
    add("pii", "ru_inn", "ru", f"ИНН организации {inn10()}, счёт в банке.")
    add("pii", "ru_inn", "ru", f"ИНН физлица: {inn12()}.")
    add("clean", "ru_inn", "ru", f"Номер заказа {broken(inn10())} от поставщика.")
    add("pii", "ru_snils", "ru", f"СНИЛС {snils()} указан в заявлении.")
    s = snils()
    add("clean", "ru_snils", "ru", f"Код {s[:-2]}{(int(s[-2:]) + 1) % 100:02d} из реестра.")
    add("pii", "ru_ogrn", "ru", f"ОГРН {ogrn(13)}, ОГРНИП {ogrn(15)}.")
    add("clean", "ru_ogrn", "ru", f"Номер партии {broken(ogrn(13))}.")
    add("pii", "us_ssn", "en", f"SSN on file: {ssn()}.")
    add("clean", "us_ssn", "en", f"Case number {rng.choice(['000', '666', '912'])}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)} was closed.")
for _ in range(20):
    series, number = passport()
    add("pii", "ru_passport", "ru", rng.choice([f"Паспорт {series} {number}, выдан ОВД.", f"серия {series[:2]} {series[2:]} № {number}",
                                                f"Passport: {series}{number}", f"паспорт гражданина РФ {series} {number}"]))
    series, number = passport(valid=False)
    add("clean", "ru_passport", "ru", rng.choice([f"Паспорт {series} {number}", f"Артикул {series[:2]} {series[2:]} {number} на складе."]))
    while True:   # ungrouped and without the word: not a passport (and not by chance an INN)
        digits = "".join(passport())
        w = [2, 4, 10, 3, 5, 9, 4, 6, 8]
        if sum(a * int(b) for a, b in zip(w, digits)) % 11 % 10 != int(digits[9]):
            break
    add("clean", "ru_passport", "ru", f"Накладная {digits} от поставщика.")
    bik = "04" + "".join(rng.choice(string.digits) for _ in range(7))
    add("pii", "bank_account", "ru", f"Р/с {account(bik)}, БИК {bik}.")
    add("pii", "bank_account", "ru", f"Расчётный счёт: {account(bik)}")
    add("clean", "bank_account", "ru", f"р/с {account(bik, valid=False)} БИК {bik}")
    add("clean", "bank_account", "ru", f"Трек-номер посылки {''.join(rng.choice(string.digits) for _ in range(20))}.")
    groups = [f"{rng.randint(0, 65535):x}" for _ in range(8)]
    add("pii", "ip_address", "en", rng.choice([f"The client connected from {':'.join(groups)}.", f"Ban 2001:db8:{groups[2]}::{groups[7]} now.",
                                                f"Link-local fe80::{groups[5]}:{groups[6]} on eth0."]))
    add("clean", "ip_address", "en", rng.choice([f"The meeting is at 12:{rng.randint(10, 59)}:{rng.randint(10, 59)}.",
                                                 "Use std::vector and a::b in C++.", f"MAC 00:1a:2b:3c:4d:{rng.randint(10, 99)}"]))

for _ in range(20):
    user = token(string.ascii_lowercase, rng.randint(3, 9))
    add("pii", "email", "en", f"Write to {user}.{token(string.ascii_lowercase, 4)}@{rng.choice(['example.com', 'mail.ru', 'corp.example.org'])} please.")
    add("pii", "phone", "ru", f"Телефон: +7 (9{rng.randint(10, 99)}) {rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}")
    add("pii", "phone", "ru", f"Звоните 8 9{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(10, 99)} {rng.randint(10, 99)}")
    add("pii", "phone", "en", f"Call +44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)} after five.")
    add("pii", "ip_address", "en", f"The request came from {rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} at noon.")
    add("pii", "secret", "en", f"aws key AKIA{token(string.ascii_uppercase + string.digits, 16)} leaked")
    add("pii", "secret", "en", f"token=ghp_{token(string.ascii_letters + string.digits, 36)}")
    add("pii", "secret", "en", "jwt eyJ" + token(string.ascii_letters, 20) + ".eyJ" + token(string.ascii_letters, 30) + "." + token(string.ascii_letters + "_-", 43))
    add("clean", "numbers", "en", f"Version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)} shipped on 2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}.")
    add("clean", "numbers", "en", f"The invoice total is {rng.randint(1, 99)} {rng.randint(100, 999)}.{rng.randint(10, 99)} EUR for order {rng.randint(10000, 99999)}.")
    add("clean", "numbers", "ru", f"Заказ №{rng.randint(100000, 999999)} доставлен {rng.randint(1, 28)}.{rng.randint(1, 12):02d}.2024, сумма {rng.randint(1000, 99999)} руб.")
    add("clean", "ip_address", "en", f"Invalid address 999.{rng.randint(0, 255)}.{rng.randint(0, 255)}.1 was rejected.")
    add("clean", "email", "en", f"Mention @{token(string.ascii_lowercase, 6)} in the channel.")
add("pii", "secret", "en", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----")
add("pii", "secret", "en", "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----")

out = pathlib.Path(__file__).with_name("pii.jsonl")
with out.open("w", encoding="utf-8") as f:
    for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
print(f"{out}: {len(rows)} rows, {sum(r['label'] == 'pii' for r in rows)} with identifiers, {sum(r['label'] == 'clean' for r in rows)} clean")

"""PII scrubbing of free text before it is stored: phones, e-mails, card and ID-card numbers.

The store applies it to search queries, event context and user attributes on every write
(``[privacy] scrub_pii``, on by default; ``storage/sql.py``), so the HTTP API, the Python API,
the impression log and ``shelfwise import`` all pass through it. What is masked, each replaced
by a tag:

- ``[email]`` an e-mail address;
- ``[id]`` a Chinese resident ID number (18 characters: region, a real birth date, sequence,
  ISO 7064 MOD 11-2 check character);
- ``[card]`` 13-19 digits, together or in groups (4 digits, then groups of 3-6 after spaces or
  dashes), that pass the Luhn check and start with a payment-card industry digit (2-6, ISO/IEC
  7812); a 13-digit number that is a valid EAN-13 barcode is left alone (shoppers search by
  barcode);
- ``[phone]`` a Chinese mobile number (``1[3-9]`` + 9 digits, optionally ``+86``/``0086``/
  ``86`` and spaces or dashes in the 3-4-4 groups), a Chinese landline written with its area
  code (``010-12345678``, ``(0755)86013388``), or an international number starting with ``+``
  (8-15 digits, E.164).

A match must not touch a Latin letter or another digit on either side, so SKU-like codes
(``SM13800138000``), model numbers, prices and sizes (``120x200cm``) stay as they are; text
with no ``@`` and no run of 7 digits (and separators) costs one regex search. Context keys that
the server itself fills with ids (:data:`ID_KEYS`) are not scrubbed, so a numeric item id can
still join its impressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date
from typing import Any

#: Context keys whose values are ids written by the server (impressions, the search log,
#: exploration and promotion decisions): never PII, and must stay joinable.
ID_KEYS = frozenset({"item", "items", "cart", "source", "promotion_id", "bundle", "surface",
                     "endpoint"})

_TRIGGER = re.compile(r"@|\d[\d ().-]{5,}\d")
"""Every pattern's match holds an ``@`` or 7+ characters of digits and separators: text
without one is returned as it is, with one search."""
_L = r"(?<![0-9A-Za-z])"  # no digit or Latin letter just before ...
_R = r"(?![0-9A-Za-z])"  # ... or just after (CJK text around a number is fine)

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                    r"\.[A-Za-z]{2,}(?![A-Za-z0-9-])")
_CN_ID = re.compile(_L + r"[1-8]\d{5}(?:18|19|20)\d{2}[01]\d[0-3]\d\d{3}[\dXx]" + _R)
_CARD = re.compile(_L + r"(?:\d{13,19}|\d{4}(?:[ -]\d{3,6}){2,4})" + _R)
_CN_MOBILE = re.compile(r"(?<![0-9A-Za-z+])(?:(?:\+|00)?86[ -]?|\(\+?86\)[ -]?)?"
                        r"1[3-9]\d(?:[ -]?\d{4}){2}" + _R)
_CN_LANDLINE = re.compile(_L + r"(?:\(0\d{2,3}\)[ -]?|0\d{2,3}-)[2-9]\d{6,7}" + _R)
_INTL = re.compile(r"(?<![0-9A-Za-z+])\+[1-9][0-9 ().-]{6,22}\d" + _R)

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def cn_id_valid(text: str) -> bool:
    """An 18-character Chinese resident ID: a real birth date and the right check character."""
    if len(text) != 18 or not text[:17].isdigit():
        return False
    try:
        born = date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return False
    if born > date.today():
        return False
    total = sum(int(d) * w for d, w in zip(text[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == text[17].upper()


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check that every payment card number passes."""
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if k % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def ean13_valid(digits: str) -> bool:
    """A 13-digit GTIN/EAN-13 barcode with the right check digit."""
    if len(digits) != 13:
        return False
    total = sum(int(d) * (3 if k % 2 else 1) for k, d in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == int(digits[12])


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", m.group())
    if (13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)
            and not ean13_valid(digits)):
        return "[card]"
    return m.group()


def _intl(m: re.Match[str]) -> str:
    n = sum(ch.isdigit() for ch in m.group())
    return "[phone]" if 8 <= n <= 15 else m.group()


_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (_EMAIL, "[email]"),
    (_CN_ID, lambda m: "[id]" if cn_id_valid(m.group()) else m.group()),
    (_CARD, _card),
    (_CN_MOBILE, "[phone]"),
    (_CN_LANDLINE, "[phone]"),
    (_INTL, _intl),
)


def scrub_text(text: str) -> str:
    """``text`` with every phone number, e-mail, card and ID-card number replaced by its tag."""
    if not _TRIGGER.search(text):
        return text
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


def scrub_value(value: Any) -> Any:
    """Strings scrubbed inside any nesting of dicts and lists (keys and non-strings kept)."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and value > 999_999:
        masked = scrub_text(str(value))  # a phone or card number sent as a JSON number
        return value if masked == str(value) else masked
    return value


def scrub_context(context: dict[str, Any]) -> dict[str, Any]:
    """An event context with its free text scrubbed (values under :data:`ID_KEYS` kept)."""
    return {k: v if k in ID_KEYS else scrub_value(v) for k, v in context.items()}


def scrub_context_json(text: str) -> str:
    """:func:`scrub_context` on a context stored as JSON text (the store's bulk rows); ``text``
    itself when nothing in it needs masking."""
    if not _TRIGGER.search(text):
        return text
    context = json.loads(text)
    if not isinstance(context, dict):
        return text
    clean = scrub_context(context)
    return text if clean == context else json.dumps(clean, allow_nan=False)

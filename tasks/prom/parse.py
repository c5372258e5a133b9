"""Reading one product page: status_id, price, order count and rating, as 1.0.9 did (pure: HTML in, Page out).

Parsed with selectolax (Lexbor, a real HTML5 parser), imported when a page is parsed, with CSS
selectors on the page's data-qaid markers; no regular expression touches HTML.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selectolax.lexbor import LexborNode

# status_id values, as the deployed server knows them
NOT_AVAILABLE = 0  # also: a page-not-found page, HTTP 404/410
IN_STOCK = 1
READY_TO_SHIP = 2
MADE_TO_ORDER = 3
DELETED = 4  # the page shows a warning panel
UNKNOWN = 5  # unknown status text, or the page could not be had (timeout, 5xx, ...)

# product_presence texts (Ukrainian and Russian) in the protocol's order, compared as lower-cased
# words; the first of them contained in a text gives its status (presence_status).
PRESENCE_TEXTS: dict[str, int] = {
    "недоступний": NOT_AVAILABLE,
    "недоступен": NOT_AVAILABLE,
    "в наявності": IN_STOCK,
    "в наличии": IN_STOCK,
    "готово до відправки": READY_TO_SHIP,
    "готово к отправке": READY_TO_SHIP,
    "під замовлення": MADE_TO_ORDER,
    "под заказ": MADE_TO_ORDER,
}

# order_quantity of a page without an order_counter (the site shows none before a first sale).
NO_COUNTER_QUANTITY: int | None = None

# CSS selectors of the page's markers
SEL_MAIN = '[data-qaid="main_product_info"]'
SEL_PRICE = '[data-qaid="product_price"]'
SEL_PRESENCE = '[data-qaid="product_presence"]'
SEL_COUNTER = '[data-qaid="order_counter"]'
SEL_RATING = '[data-qaid="product_rating"]'
SEL_NOT_FOUND = '[data-qaid="page_not_found_title"]'
SEL_WARNING = '[data-qaid="warning_panel"]'
SEL_CAPTCHA = "div.g-recaptcha"

# Over text already taken out of the page (never over HTML): words, and a count such as
# "15", "1 234" (space, no-break or thin space as thousands separator) in "Продано 1 234 шт."
_WORD = re.compile(r"\w+")
_COUNT = re.compile(r"\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)|\d+")
_SPACES = str.maketrans("", "", " \u00a0\u202f\t\r\n")


@dataclass
class Page:
    """What one product page says. ``problems`` names the fields that were malformed."""

    captcha: bool = False
    status_id: int = UNKNOWN
    price: float | None = None
    order_quantity: int | None = None
    rating: float | None = None
    problems: tuple[str, ...] = ()


def _text(node: LexborNode) -> str:
    return node.text(deep=True, separator=" ", strip=False) or ""


def presence_status(text: str) -> int:
    """Map a product_presence text to a status_id, as 1.0.9 did: the first status phrase (in the
    protocol's order) contained in the text, compared as lower-cased whole words; UNKNOWN if none.

    One deliberate difference (docs/prom_pars.md, "1.0.9 vs now"): a phrase right after a
    negation ("Немає в наявності", "Нет в наличии") does not count, where 1.0.9 said "in stock".
    """
    words = _WORD.findall(text.casefold().replace("ё", "е"))
    for phrase, status in _PRESENCE_WORDS:
        size = len(phrase)
        for start in range(len(words) - size + 1):
            if words[start:start + size] == phrase and (start == 0 or words[start - 1] not in _NEGATIONS):
                return status
    return UNKNOWN


_PRESENCE_WORDS = [(phrase.split(), status) for phrase, status in PRESENCE_TEXTS.items()]
_NEGATIONS = frozenset({"немає", "нема", "нет", "не"})


def parse_number(value: str | None, low: float = 0.0, high: float = math.inf) -> float | None:
    """'1299.50', ' 1 299,50 ' -> 1299.5. Raises ValueError if present but not a number in [low, high]."""
    if value is None:
        return None
    text = value.translate(_SPACES).replace(",", ".")
    if not text:
        return None
    number = float(text)  # ValueError for anything else
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{value!r} out of range")
    return number


def parse_count(text: str) -> int | None:
    """'Продано 15 шт.' -> 15, '1 234 замовлення' -> 1234, '100+ разів' -> 100; None without digits."""
    match = _COUNT.search(text)
    if match is None:
        return None
    return int(match.group().translate(_SPACES))


def is_captcha(html: str | bytes) -> bool:
    from selectolax.lexbor import LexborHTMLParser

    return LexborHTMLParser(html).css_first(SEL_CAPTCHA) is not None


def parse_product_page(html: str | bytes) -> Page:
    """Read status, price, order count and rating from one product page's HTML, as 1.0.9 did.

    - a ``warning_panel`` anywhere: status 4 and nothing else is read (all fields null);
    - status: the ``product_presence`` text inside ``main_product_info``; without one, 0 if the
      page has ``page_not_found_title``, else 5;
    - price and order count: inside ``main_product_info`` only (the "similar products" cards
      below carry the same markers with other products' values); no block, no values;
    - rating: the first ``product_rating`` anywhere on the page (1.0.9 never scoped it; the
      product's own rating may sit outside the block).
    A malformed price or rating becomes null and is named in ``problems``; the status stays.
    """
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    if tree.css_first(SEL_CAPTCHA) is not None:
        return Page(captcha=True)
    if tree.css_first(SEL_WARNING) is not None:
        return Page(status_id=DELETED)

    block = tree.css_first(SEL_MAIN)
    page = Page(order_quantity=NO_COUNTER_QUANTITY)
    problems = []
    presence = block.css_first(SEL_PRESENCE) if block is not None else None
    if presence is not None:
        page.status_id = presence_status(_text(presence))
    elif tree.css_first(SEL_NOT_FOUND) is not None:
        page.status_id = NOT_AVAILABLE
    if block is not None:
        node = block.css_first(SEL_PRICE)
        if node is not None:
            try:
                page.price = parse_number(node.attributes.get("data-qaprice"))
            except ValueError:
                problems.append("price")
        node = block.css_first(SEL_COUNTER)
        if node is not None:
            page.order_quantity = parse_count(_text(node))
    node = tree.css_first(SEL_RATING)
    if node is not None:
        try:
            page.rating = parse_number(node.attributes.get("data-qarating"), 0.0, 5.0)
        except ValueError:
            problems.append("rating")
    page.problems = tuple(problems)
    return page


"""Generated access-log traffic for `relay bench`: distinct records with the variety of real logs.

`base_records()` makes BASE_RECORDS requests (seeded, so every run sends the same bytes):
clients with IPv4, IPv6 and IPv4-mapped addresses, each with its own browser, app, tool or
bot user agent (mostly 130-300 characters); paths of several shapes holding ids, query
strings with search words, paging and campaign tags; referers from search engines, AI
assistants, social sites and the site itself; methods and statuses in the proportions of
a busy site. Written out in upstream form they average ~400 bytes, and 1,000 gzip to
~56 KB at level 6 (~50 KB in Fluent Bit's form).

Every entry of a run also carries a unique id in its path: index `n` of the run becomes
`entry_token(n)`, eight hex digits (e.g. /api/v2/orders/8f3a91c2/items), and entry n uses
base record n % BASE_RECORDS with that id put in. `ids_in()` reads the ids back from
whatever upstream received, so losses and duplicates are counted entry by entry.
"""

from __future__ import annotations

import functools
import gc
import math
import random
import re
import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote_plus

from isal import isal_zlib

SEED = 20261125
BASE_RECORDS = 100_000
ID_SLOT = "\x00"  # where the id goes in a base record's path, replaced when a body is built
START = 1795582800.0  # 2026-11-25T05:00:00Z; the bench pins the relay's clock to 09:30 that day
SPAN = 4 * 3600.0  # the base records spread over four hours

T = TypeVar("T")
_MASK = (1 << 32) - 1
_MULT = 0x9E3779B1  # odd, so n -> n * _MULT mod 2**32 is a bijection: ids look random, never repeat
_UNMULT = pow(_MULT, -1, 1 << 32)
# An id: 8 hex digits right after "/", "-" or "." in the path (nothing else in a generated path is).
_ID_TEXT = re.compile(r"[/.-]([0-9a-f]{8})(?![0-9a-z])")
_ID_IN_JSON = re.compile(rb'"path":"[^"?]*?[/.-]([0-9a-f]{8})(?![0-9a-z])')


def entry_token(n: int) -> str:
    """The id of entry n of a run (n < 2**32), as it appears in the path."""
    return format((n * _MULT) & _MASK, "08x")


def token_index(token: str | bytes) -> int:
    return (int(token, 16) * _UNMULT) & _MASK


def id_in_path(path: str) -> int | None:
    """The entry index carried by a generated path, or None when it carries none."""
    found = _ID_TEXT.search(path.partition("?")[0])
    return token_index(found.group(1)) if found else None


def ids_in(body: bytes) -> list[int]:
    """The entry index of every generated entry in a JSON or NDJSON body, in order."""
    return [token_index(m) for m in _ID_IN_JSON.findall(body)]


NOT_OURS = 2**63  # stands for an entry with no id of the bench in its path: counts as a duplicate
_FRAME = struct.Struct("<IIB")  # entries, body length, gzipped


def frame(body: bytes, count: int, *, gzipped: bool) -> bytes:
    """One accepted upstream body (as received) for the spool the lean sink keeps."""
    return _FRAME.pack(count, len(body), gzipped) + body


def _frames(spool: BinaryIO) -> Iterator[tuple[bytes, int]]:
    at = 0  # read a frame at a time: a long run's spool is gigabytes
    while head := spool.read(_FRAME.size):
        if len(head) < _FRAME.size:
            raise ValueError(f"the spool ends inside a frame header at byte {at}")
        count, length, gzipped = _FRAME.unpack(head)
        body = spool.read(length)
        if len(body) < length:
            raise ValueError(f"the spool ends inside a body at byte {at}")
        yield (isal_zlib.decompress(body, wbits=31) if gzipped else body), count
        at += _FRAME.size + length


def spooled_ids(path: Path) -> array[int]:
    """The id of every entry in a spool of `frame`s, in order; NOT_OURS for an entry without one."""
    out = array("Q")
    with open(path, "rb") as spool:
        for body, count in _frames(spool):
            ids = ids_in(body)
            out.extend(ids[:count])
            out.extend([NOT_OURS] * (count - len(ids)))
    return out


# ---------------------------------------------------------------- vocabulary
# Only Random.random() is used (with _pick / _int below): its sequence for a seed is stable
# across Python versions, so the same seed gives the same bytes everywhere.

_WORDS = ("shipping", "logs", "fast", "pricing", "guide", "winter", "sale", "coat", "linen", "shirt",
          "garden", "chair", "desk", "lamp", "walnut", "oak", "table", "running", "shoes", "trail",
          "jacket", "wool", "socks", "travel", "mug", "ceramic", "kettle", "coffee", "grinder", "notebook",
          "release", "notes", "api", "migration", "kubernetes", "relay", "python", "tutorial", "review",
          "best", "cheap", "organic", "vintage", "modern", "compact", "wireless", "charger", "backpack")
_SEARCH = ("how to ship logs", "winter coat sale", "café crème recipe", "best running shoes 2026",
           "oak desk 160cm", "wireless charger iphone", "kubernetes log relay", "naïve bayes tutorial",
           "return policy", "track my order", "gift card balance", "size guide", "linen shirt men",
           "coffee grinder review", "is there free shipping")
_HOSTS = ("www.example.com", "www.example.com", "shop.example.com", "api.example.com", "example.com")
_SORTS = ("desc", "asc", "price", "-price", "newest", "popular", "rating")
_ASSETS = (("js", "app"), ("js", "vendor"), ("js", "chunk-checkout"), ("css", "main"), ("css", "print"),
           ("woff2", "inter-var"))
_PHONES = ("Pixel 8", "Pixel 7a", "Pixel 9 Pro", "SM-S918B", "SM-A546B", "SM-G991B", "moto g84 5G",
           "2201116SG", "CPH2451", "M2101K6G")


class _Draw:
    """Draws from one seeded Random: floats, ints, picks and weighted picks."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed).random

    def int(self, low: int, high: int) -> int:
        """low..high inclusive."""
        return low + int(self.random() * (high - low + 1))

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.random() * len(seq))]

    def weighted(self, table: tuple[tuple[T, float], ...]) -> T:
        roll, total = self.random(), 0.0
        for value, share in table:
            total += share
            if roll < total:
                return value
        return table[-1][0]

    def lognormal(self, mu: float, sigma: float) -> float:
        # Box-Muller from two uniform draws: stable across versions, unlike random.gauss
        u1, u2 = 1.0 - self.random(), self.random()
        return math.exp(mu + sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2))


def _slug(d: _Draw) -> str:
    return "-".join(d.pick(_WORDS) for _ in range(d.int(2, 4)))


def _query(d: _Draw, shape: str) -> dict[str, str]:
    """Query parameters in the order a browser would send them."""
    params: dict[str, str] = {}
    if shape == "list":
        params["page"] = d.pick(("1", "1", "1", "2", "2", "3", "4", "5", "12", "37"))
        if d.random() < 0.6:
            params["sort"] = d.pick(_SORTS)
        if d.random() < 0.3:
            params["per_page"] = d.pick(("24", "48", "96"))
    elif shape == "search":
        params["q"] = d.pick(_SEARCH)
        if d.random() < 0.4:
            params["lang"] = d.pick(("en", "fr", "de", "es", "ja", "pt-BR"))
    elif shape == "product":
        params["color"] = d.pick(("red", "navy", "black", "sand", "olive", "white"))
        params["size"] = d.pick(("xs", "s", "m", "l", "xl", "42", "44"))
    if d.random() < 0.12:  # campaign links
        params["utm_source"] = d.pick(("newsletter", "google", "facebook", "instagram", "partner"))
        params["utm_medium"] = d.pick(("email", "cpc", "social", "referral"))
        params["utm_campaign"] = d.pick(("winter-sale-2026", "bf-2026", "xmas-gifts", "launch-q4"))
    return params


class _Site:
    """What a site has a finite number of: products, posts, pages that link to each other."""

    def __init__(self, d: _Draw) -> None:
        self.products = [_slug(d) for _ in range(2_000)]
        self.posts = [f"2026/{d.int(1, 11):02d}/{_slug(d)}" for _ in range(300)]
        self.pages = ["", "cart", "account", "c/sale", *(f"products/{p}" for p in self.products[:200]),
                      *(f"blog/{p}" for p in self.posts[:60])]


def _path(d: _Draw, site: _Site, method: str) -> tuple[str, dict[str, str]]:
    """A path with ID_SLOT where the id goes, and its query parameters."""
    i = ID_SLOT
    if method in ("POST", "PUT", "DELETE"):
        return d.pick((f"/api/v2/orders/{i}/items", f"/api/v2/carts/{i}", f"/api/v1/users/{i}/sessions",
                       f"/api/v2/orders/{i}/payments", f"/checkout/{i}/confirm", f"/api/v1/events/{i}",
                       f"/graphql/{i}")), {}
    roll = d.random()
    if roll < 0.22:
        return f"/products/{d.pick(site.products)}-{i}", _query(d, "product") if d.random() < 0.3 else {}
    if roll < 0.38:
        return f"/api/v2/orders/{i}/items", _query(d, "list")
    if roll < 0.50:
        asset, name = d.pick(_ASSETS)
        return f"/static/{asset}/{name}.{i}.{asset}", {}
    if roll < 0.60:
        return f"/blog/{d.pick(site.posts)}-{i}", _query(d, "none")
    if roll < 0.70:
        return f"/c/{d.pick(_WORDS)}/{i}", _query(d, "list")
    if roll < 0.78:
        return f"/s/{i}", _query(d, "search")
    if roll < 0.86:
        return f"/images/{i}/{d.pick((320, 640, 1280, 1920))}w.{d.pick(('webp', 'avif', 'jpg'))}", {}
    if roll < 0.93:
        return f"/api/v1/users/{i}/{d.pick(('profile', 'notifications', 'cart', 'wishlist'))}", {}
    return f"/account/orders/{i}", _query(d, "list") if d.random() < 0.5 else {}


_METHODS = (("GET", 0.86), ("POST", 0.08), ("HEAD", 0.025), ("PUT", 0.015), ("DELETE", 0.01), ("OPTIONS", 0.01))
_STATUS_GET = ((200, 0.80), (304, 0.06), (404, 0.05), (301, 0.025), (302, 0.02), (403, 0.01), (401, 0.01),
               (500, 0.01), (502, 0.005), (503, 0.005), (429, 0.005))
_STATUS_WRITE = ((200, 0.55), (201, 0.25), (204, 0.05), (400, 0.06), (422, 0.04), (409, 0.02), (500, 0.03))


def _status(d: _Draw, method: str) -> int:
    if method == "OPTIONS":
        return 204
    return d.weighted(_STATUS_WRITE if method in ("POST", "PUT", "DELETE") else _STATUS_GET)


# ---------------------------------------------------------------- clients: address + user agent


def _ip(d: _Draw) -> str:
    roll = d.random()
    if roll < 0.68:
        first = d.pick((23, 31, 45, 51, 66, 72, 81, 89, 93, 104, 141, 151, 172, 185, 203, 212))
        return f"{first}.{d.int(0, 255)}.{d.int(0, 255)}.{d.int(1, 254)}"
    if roll < 0.95:
        prefix = d.pick(("2a01:cb00", "2600:1700", "2a02:8109", "2001:db8", "2406:da18", "2a03:2880"))
        return f"{prefix}:{d.int(0, 65535):x}:{d.int(0, 65535):x}::{d.int(1, 65535):x}"
    return f"::ffff:{d.int(1, 223)}.{d.int(0, 255)}.{d.int(0, 255)}.{d.int(1, 254)}"


_KINDS = (("chrome-win", 0.17), ("edge-win", 0.07), ("safari-mac", 0.07), ("safari-ios", 0.13),
          ("chrome-android", 0.11), ("samsung", 0.05), ("google-app-ios", 0.04), ("firefox", 0.03),
          ("facebook-ios", 0.05), ("instagram-android", 0.04), ("googlebot", 0.06), ("bingbot", 0.03),
          ("gptbot", 0.03), ("chatgpt-user", 0.02), ("claudebot", 0.02), ("perplexitybot", 0.015),
          ("applebot", 0.015), ("ahrefsbot", 0.01), ("tool", 0.02))


def _user_agent(d: _Draw) -> str:
    kind = d.weighted(_KINDS)
    chrome = f"{d.int(129, 133)}.0.{d.pick((6668, 6723, 6778, 6834, 6943))}.{d.pick((58, 69, 85, 100, 116, 139))}"
    major = d.int(16, 18)
    ios = f"{major}_{d.int(0, 6)}"
    android = d.pick(("12", "13", "14", "15"))
    phone = d.pick(_PHONES)
    build = f"{d.pick(('UP1A', 'TP1A', 'AP2A'))}.{d.pick(('231005', '240105', '240905'))}.{d.int(1, 20):03d}"
    webkit = "AppleWebKit/537.36 (KHTML, like Gecko)"
    if kind == "chrome-win":
        return f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {webkit} Chrome/{chrome} Safari/537.36"
    if kind == "edge-win":
        return f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {webkit} Chrome/{chrome} Safari/537.36 Edg/{chrome}"
    if kind == "safari-mac":
        return (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                f"Version/{major}.{d.int(0, 6)} Safari/605.1.15")
    if kind == "safari-ios":
        return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                f"Version/{ios.replace('_', '.')} Mobile/15E148 Safari/604.1")
    if kind == "chrome-android":
        return f"Mozilla/5.0 (Linux; Android {android}; {phone}) {webkit} Chrome/{chrome} Mobile Safari/537.36"
    if kind == "samsung":
        return (f"Mozilla/5.0 (Linux; Android {android}; {phone}) {webkit} "
                f"SamsungBrowser/{d.int(24, 27)}.0 Chrome/{chrome} Mobile Safari/537.36")
    if kind == "google-app-ios":
        return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                f"GSA/{d.int(340, 352)}.0.{d.int(680000000, 699999999)} Mobile/15E148 Safari/604.1")
    if kind == "firefox":
        return f"Mozilla/5.0 (X11; Linux x86_64; rv:{d.int(128, 134)}.0) Gecko/20100101 Firefox/{d.int(128, 134)}.0"
    if kind == "facebook-ios":
        return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                f"Mobile/15E148 [FBAN/FBIOS;FBAV/{d.int(480, 495)}.0.0.{d.int(20, 60)}.{d.int(100, 120)};"
                f"FBBV/{d.int(600000000, 699999999)};FBDV/iPhone{d.int(13, 16)},{d.int(1, 4)};FBMD/iPhone;"
                f"FBSN/iOS;FBSV/{ios.replace('_', '.')};FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/0]")
    if kind == "instagram-android":
        return (f"Mozilla/5.0 (Linux; Android {android}; {phone} Build/{build}; wv) {webkit} Version/4.0 "
                f"Chrome/{chrome} Mobile Safari/537.36 Instagram {d.int(340, 360)}.0.0.{d.int(10, 50)}.{d.int(100, 130)} "
                f"Android (34/14; 420dpi; 1080x2340; samsung; {phone}; a54x; s5e8835; en_GB; {d.int(600000000, 699999999)})")
    if kind == "googlebot":
        return (f"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) {webkit} Chrome/{chrome} "
                f"Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    if kind == "bingbot":
        return (f"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
                f"+http://www.bing.com/bingbot.htm) Chrome/{chrome} Safari/537.36")
    if kind == "applebot":
        return ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                "Version/17.4 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)")
    fixed = {
        "gptbot": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "chatgpt-user": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; "
                        "+https://openai.com/bot",
        "claudebot": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
                     "+claudebot@anthropic.com)",
        "perplexitybot": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; "
                         "+https://perplexity.ai/perplexitybot)",
        "ahrefsbot": "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    }
    if kind in fixed:
        return fixed[kind]
    return d.pick(("curl/8.5.0", "python-requests/2.32.3", "Go-http-client/2.0", "okhttp/4.12.0"))


def _referer(d: _Draw, site: _Site, host: str) -> str:
    roll = d.random()
    if roll < 0.42:
        return "-"
    if roll < 0.64:
        return f"https://{host}/{d.pick(site.pages)}"
    if roll < 0.82:
        engine = d.pick(("https://www.google.com/", "https://www.bing.com/search?q=", "https://duckduckgo.com/"))
        return engine + (quote_plus(d.pick(_SEARCH)) if engine.endswith("=") else "")
    if roll < 0.92:
        return d.pick(("https://chatgpt.com/", "https://www.perplexity.ai/", "https://claude.ai/",
                       "https://gemini.google.com/"))
    return d.pick(("https://t.co/", "https://l.facebook.com/", "https://www.instagram.com/", "https://www.reddit.com/"))


# ---------------------------------------------------------------- records


@functools.cache
def base_records() -> tuple[dict[str, Any], ...]:
    """BASE_RECORDS requests, each a dict of neutral fields (path holds ID_SLOT), built once per process.

    Keys: time (unix seconds, ms precision), ip, user, host, method, path, query (dict), status,
    size, referer ("-" for none), agent, duration_ms.
    """
    d = _Draw(SEED)
    site = _Site(d)
    agents = [_user_agent(d) for _ in range(3_000)]  # many clients share a browser build
    clients = [(_ip(d), d.pick(agents), "-" if d.random() < 0.97 else d.pick(("alice", "bob", "svc-export")),
                d.pick(_HOSTS)) for _ in range(6_000)]
    gc_was_on = gc.isenabled()
    gc.disable()  # 100,000 new dicts would set off full collections over and over
    try:
        return tuple(_records(d, site, clients))
    finally:
        if gc_was_on:
            gc.enable()


def _records(d: _Draw, site: _Site, clients: list[tuple[str, str, str, str]]) -> Iterable[dict[str, Any]]:
    for n in range(BASE_RECORDS):
        # A few clients are busy, most are seen a handful of times.
        ip, agent, user, host = clients[int(len(clients) * d.random() ** 2)]
        method = d.weighted(_METHODS)
        path, query = _path(d, site, method)
        status = _status(d, method)
        size = 0 if method == "HEAD" or status in (204, 304) else int(d.lognormal(8.6, 1.4))
        yield {
            "time": round(START + SPAN * n / BASE_RECORDS + d.int(0, 999) / 1000, 3),
            "ip": ip, "user": user, "host": host, "method": method, "path": path, "query": query,
            "status": status, "size": size, "referer": _referer(d, site, host), "agent": agent,
            "duration_ms": round(d.lognormal(2.8, 1.1), 1),
        }


def query_string(query: dict[str, str]) -> str:
    return "&".join(f"{key}={quote_plus(value)}" for key, value in query.items())


def check_unique_slots(records: Iterable[dict[str, Any]]) -> None:
    """Each path must hold ID_SLOT once and no other id-shaped token (else ids would be misread)."""
    for record in records:
        path = record["path"]
        assert path.count(ID_SLOT) == 1, path
        assert _ID_TEXT.search(path.replace(ID_SLOT, "z")) is None, path

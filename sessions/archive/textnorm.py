"""Folding of names for search: case, diacritics and script variants, Cyrillic and Latin alike.

``fold("Ерлан Сәтбаев") == fold("ерлан сатбаев") == "ерлан сатбаев"``. NFKD splits letters that
Unicode composes from a base and a mark (й = и + breve, ї = і + diaeresis, é = e + acute), and the
marks are dropped. Kazakh and Ukrainian letters that are *not* decomposable (ә, ғ, қ, ң, ө, ұ, ү,
һ, ґ, є, і) are mapped to the nearest common letter, so a clerk who types a name on a Russian or
plain keyboard still finds it. Folding only widens matches, it never changes what is stored.
"""
from __future__ import annotations

import re
import unicodedata

# Letters without a Unicode decomposition, mapped to the base letter a plain keyboard offers.
# Cyrillic: Kazakh (ә ғ қ ң ө ұ ү һ), Ukrainian (ґ є і; ї and й decompose to і/и + mark),
# Belarusian ў decomposes. Latin: a few letters with a stroke that NFKD leaves alone.
_LETTER_MAP = str.maketrans({
    "ә": "а", "ғ": "г", "қ": "к", "ң": "н", "ө": "о", "ұ": "у", "ү": "у", "һ": "х",
    "ґ": "г", "є": "е", "і": "и", "ё": "е", "ъ": "", "ь": "",
    "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ı": "i", "æ": "ae", "œ": "oe", "ß": "ss", "þ": "th",
})
# Apostrophes inside Ukrainian names (Мар'яна, Ком’як, Ілляʼ): every variant is dropped.
_APOSTROPHES = re.compile(r"['\u2019\u02bc\u2018`\u00b4\u02b9]")
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)

# Vehicle plates: Ukrainian and Kazakh plates use Cyrillic letters that look like Latin ones
# (АА 1234 ВК). A plate typed in either script must match, so both fold to Latin.
_PLATE_MAP = str.maketrans({
    "а": "a", "в": "b", "е": "e", "і": "i", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x",
})


def fold(text: str | None) -> str:
    """Case-, diacritics- and punctuation-insensitive form of a name: words separated by one space."""
    if not text:
        return ""
    t = unicodedata.normalize("NFKD", text)
    t = "".join(ch for ch in t if not unicodedata.combining(ch))
    t = t.casefold()
    # casefold may leave composed letters (e.g. from NFKD-stable ones): map after it.
    t = t.translate(_LETTER_MAP)
    t = _APOSTROPHES.sub("", t)
    t = _NON_WORD.sub(" ", t).replace("_", " ")
    return " ".join(t.split())


def fold_plate(text: str | None) -> str:
    """A plate without spaces or dashes, case-folded, Cyrillic look-alike letters as Latin."""
    if not text:
        return ""
    t = unicodedata.normalize("NFKD", text)
    t = "".join(ch for ch in t if not unicodedata.combining(ch)).casefold()
    return _NON_WORD.sub("", t).replace("_", "").translate(_PLATE_MAP)


def tokens(query: str) -> list[str]:
    """The folded words of a search query; every word must occur in the folded name."""
    return fold(query).split()

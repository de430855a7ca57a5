"""Folding of names for search: case, diacritics and script variants, Cyrillic and Latin alike.

``fold("Ерлан Сәтбаев") == fold("ерлан сатбаев") == "ерлан сатбаев"``. NFKD splits letters that
Unicode composes from a base and a mark (й = и + breve, ї = і + diaeresis, é = e + acute), and the
marks are dropped. Kazakh and Ukrainian letters that are *not* decomposable (ә, ғ, қ, ң, ө, ұ, ү,
һ, ґ, є, і) are mapped to the nearest common letter, so a clerk who types a name on a Russian or
plain keyboard still finds it. Folding only widens matches, it never changes what is stored.

Names are also searched in the Latin spelling a passport gives them, so ``Koval`` finds
"Коваль" and ``Satbaev`` finds "Сәтбаев": each stored name is indexed in three forms (folded
Cyrillic, the Ukrainian official transliteration of KMU resolution No. 55 of 27.01.2010, and the
ICAO Doc 9303 transliteration that Russian and Kazakh passports use), and a query in either
script is compared with all of them.
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


# --- transliteration -------------------------------------------------------------------------------

# KMU resolution No. 55 (27.01.2010), the Ukrainian passport standard. Є Ї Й Ю Я are written
# Ye Yi Y Yu Ya at the start of a word and ie i i iu ia elsewhere; "зг" is "zgh" (Zghurskyi);
# the soft sign and the apostrophe are not written.
_UA_FIRST = {"є": "ye", "ї": "yi", "й": "y", "ю": "yu", "я": "ya"}
_UA = {"а": "a", "б": "b", "в": "v", "г": "h", "ґ": "g", "д": "d", "е": "e", "є": "ie", "ж": "zh", "з": "z",
       "и": "y", "і": "i", "ї": "i", "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p",
       "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh",
       "щ": "shch", "ь": "", "ю": "iu", "я": "ia",
       # Russian letters in a name written in Ukrainian documents are rare; spelt as ICAO does.
       "ё": "e", "ъ": "ie", "ы": "y", "э": "e"}
# ICAO Doc 9303 (part 3), used by Russian and Kazakh passports; the Kazakh letters as Kazakhstan's
# passports write them.
_ICAO = {"а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i",
         "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
         "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "ie", "ы": "y",
         "ь": "", "э": "e", "ю": "iu", "я": "ia",
         "ә": "a", "ғ": "g", "қ": "k", "ң": "n", "ө": "o", "ұ": "u", "ү": "u", "һ": "h", "і": "i",
         "ґ": "g", "є": "ie", "ї": "i"}
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")


def has_cyrillic(text: str | None) -> bool:
    return bool(text) and bool(_CYRILLIC.search(text or ""))


def _cyrillic_letters(text: str) -> str:
    """Lower case with apostrophes removed, composed letters kept (й, ї stay themselves)."""
    return _APOSTROPHES.sub("", unicodedata.normalize("NFC", text).lower())


def translit_ua(text: str | None) -> str:
    """The Ukrainian official Latin spelling (KMU No. 55 of 2010), lower case."""
    t = _cyrillic_letters(text or "")
    out: list[str] = []
    for i, ch in enumerate(t):
        at_start = i == 0 or not t[i - 1].isalpha()
        if ch == "г" and i > 0 and t[i - 1] == "з":
            out.append("gh")
        elif at_start and ch in _UA_FIRST:
            out.append(_UA_FIRST[ch])
        else:
            out.append(_UA.get(ch, _ICAO.get(ch, ch)))
    return "".join(out)


def translit_icao(text: str | None) -> str:
    """The ICAO Doc 9303 Latin spelling used by Russian and Kazakh passports, lower case."""
    return "".join(_ICAO.get(ch, ch) for ch in _cyrillic_letters(text or ""))


def search_forms(text: str | None) -> str:
    """Every folded form a name is found by, separated by ' | ' (what the catalog indexes)."""
    if not text:
        return ""
    forms = [fold(text)]
    if has_cyrillic(text):
        forms += [fold(translit_ua(text)), fold(translit_icao(text))]
    return " | ".join(dict.fromkeys(f for f in forms if f))


def query_variants(query: str | None) -> list[list[str]]:
    """For each word of a name query, the folded spellings that may match it: the word itself and,
    for a Cyrillic word, its two Latin spellings. Every word must match one of its spellings."""
    out: list[list[str]] = []
    for word in (query or "").split():
        forms = [fold(word)]
        if has_cyrillic(word):
            forms += [fold(translit_ua(word)), fold(translit_icao(word))]
        spellings = list(dict.fromkeys(" ".join(f.split()) for f in forms if f.strip()))
        if spellings:
            out.append(spellings)
    return out

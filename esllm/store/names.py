"""Names people give things that others must tell apart (rating sessions, prompt sets): how a new name is
normalised, when it is refused as invisible, and the skeleton two names are compared by for uniqueness.

Only new names go through here; names already stored are read as they are. Account names do not need it:
users.py allows lower-case ASCII letters, digits and «._-» only, whose skeleton is the name itself.

`normalize` applies NFKC and writes each run of white space as one space: fullwidth «ｐｉｌｏｔｏ» and
mathematical bold «𝐩𝐢𝐥𝐨𝐭𝐨» become «piloto», a letter + combining accent becomes the precomposed letter, a
no-break space becomes a space.

`refusal` says why a name (as typed, and once normalised) cannot be shown: a control or format character
(line breaks, tabs, bidi overrides, zero-width spaces and joiners: categories Cc, Cf, Zl, Zp, Cs, Co), any
other default-ignorable code point (Hangul fillers U+115F, U+1160, U+3164, U+FFA0; the combining grapheme
joiner; Mongolian selectors) except the variation selectors of emoji, the blank Braille pattern U+2800, a
name that starts with a combining mark, or one with nothing but spaces and marks.

`skeleton` is what uniqueness compares. Unicode's confusables table (UTS #39) ships in no installed package,
so this is a small mapping, and it says what it covers: NFKC; default-ignorable code points removed; the
Cyrillic and Greek letters drawn like a Latin letter (`LOOKALIKE`: «рilоtо» with Cyrillic р and о; Greek Ρ,
Ι, Ο, Τ, ο, ν…) mapped to it; then case folded (PILOTO = Piloto = piloto, straße = strasse); white space runs
as one space. It does NOT catch: look-alikes inside ASCII (0/O, 1/l/I, rn/m, vv/w), other scripts'
look-alikes (Armenian, Cherokee, Latin small capitals ᴀ, IPA letters other than ɑ and ɡ), the Cyrillic and
Greek letters left out of `LOOKALIKE` (к, т, н, η, …), or marks that look alike (a cedilla vs an ogonek);
and a mixed-script name is refused only when it collides with a stored one. Accents count: «pilotó» and
«piloto» are two names, as a reader sees them.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable, Optional

# Cyrillic, Greek and Latin-extension letters drawn like one Latin letter (upper case to upper case, so that case
# folding afterwards treats them as that letter).
LOOKALIKE = str.maketrans({
    # Cyrillic
    "А": "A", "В": "B", "Е": "E", "Ѕ": "S", "І": "I", "Ј": "J", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "У": "Y", "Ү": "Y", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "l",
    "а": "a", "е": "e", "ѕ": "s", "і": "i", "ј": "j", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "ү": "y",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l",
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    "α": "a", "ι": "i", "ν": "v", "ο": "o", "ρ": "p", "υ": "u", "ϲ": "c", "ϳ": "j",
    # Latin extensions
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g",
})

# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt): drawn as nothing.
DEFAULT_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                     (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                     (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
                     (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
VARIATION_SELECTORS = (0xFE00, 0xFE0F)  # ignorable, but part of an emoji («❤️»): allowed in a name
BLANK = {0x2800}  # the blank Braille pattern: not ignorable, yet drawn as a space
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co"}


def ignorable(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in DEFAULT_IGNORABLE)


def _invisible(ch: str) -> bool:
    lo, hi = VARIATION_SELECTORS
    return (unicodedata.category(ch) in INVISIBLE_CATEGORIES or ord(ch) in BLANK
            or ignorable(ch) and not lo <= ord(ch) <= hi)


def normalize(name: str) -> str:
    """NFKC, each run of white space one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", name).split())


def refusal(raw: str) -> Optional[str]:
    """Why a name cannot be used (the end of a Spanish sentence), or None; `raw` as typed, judged also once
    normalised. An empty name is the caller's to refuse (its message names the thing)."""
    name = normalize(raw)
    bad = next((ch for ch in raw + name if _invisible(ch)), None)
    if bad is not None:
        return (f"no puede tener saltos de línea, tabuladores ni otros caracteres de control o invisibles "
                f"(tiene U+{ord(bad):04X})")
    if not name:
        return None
    if unicodedata.category(name[0]).startswith("M"):
        return "no puede empezar por un acento o una marca suelta"
    if all(unicodedata.category(ch)[0] in "ZM" or ignorable(ch) for ch in name):
        return "no tiene ningún carácter visible"
    return None


def skeleton(name: str) -> str:
    """What two names are compared by: equal skeletons look alike (see the module's docstring for what that
    covers and what it does not)."""
    text = "".join(ch for ch in unicodedata.normalize("NFD", normalize(name)) if not ignorable(ch))
    text = unicodedata.normalize("NFKC", text.translate(LOOKALIKE).casefold())  # casefold can denormalise
    return " ".join(text.split())


def look_alike(name: str, existing: Iterable[str]) -> Optional[str]:
    """The first of `existing` whose skeleton is `name`'s (itself, when stored as is), or None."""
    key = skeleton(name)
    return next((other for other in existing if skeleton(other) == key), None)

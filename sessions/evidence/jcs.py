"""RFC 8785 JSON Canonicalization Scheme (JCS): the byte form signatures of format
examrec-session/2 cover, so anyone can recompute it without Python (e.g. `jq`-free tools, the
Go/Java/JS JCS libraries, or by hand from FORMAT.md).

The rules (RFC 8785 section 3.2): no whitespace; object members sorted by their names compared as
UTF-16 code units; strings escaped as ECMAScript JSON.stringify does (only ", \\ and the control
characters, \\b \\t \\n \\f \\r short, others \\u00xx), everything else as UTF-8; numbers as
ECMAScript's Number.prototype.toString of the IEEE-754 double. Integers beyond +-2**53 are not
exactly representable as a double, so they are refused: examrec writes such values (nanosecond
clock stamps) as decimal strings.
"""
from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

MAX_SAFE_INTEGER = 2 ** 53 - 1


class NotCanonicalisable(ValueError):
    """A value JCS has no canonical form for (NaN, infinity, an integer beyond 2**53, a key that is not a string)."""


def _number(x: int | float) -> str:
    if isinstance(x, bool):  # bool is an int in Python: handled by the caller, never here
        raise TypeError(x)
    if isinstance(x, int):
        if abs(x) > MAX_SAFE_INTEGER:
            raise NotCanonicalisable(f"integer {x} is beyond 2**53: write it as a string")
        return str(x)
    if math.isnan(x) or math.isinf(x):
        raise NotCanonicalisable(f"{x} is not a JSON number")
    if x == 0:
        return "0"  # -0 too (ECMAScript prints 0)
    # repr gives the shortest digits that round-trip, as ECMAScript does; only the layout differs.
    sign = "-" if x < 0 else ""
    digits_t, exp = Decimal(repr(abs(x))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_t))
    k = len(digits)
    n = k + int(exp)  # the decimal point sits after n digits
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mant = digits[0] + ("." + digits[1:] if k > 1 else "")
        out = f"{mant}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + out


def _encode(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, (int, float)):
        out.append(_number(obj))
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))  # same escapes as JSON.stringify
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(obj, dict):
        for key in obj:
            if not isinstance(key, str):
                raise NotCanonicalisable(f"object key {key!r} is not a string")
        out.append("{")
        for i, key in enumerate(sorted(obj, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(obj[key], out)
        out.append("}")
    else:
        raise NotCanonicalisable(f"{type(obj).__name__} is not a JSON value")


def canonicalize(obj: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value."""
    out: list[str] = []
    _encode(obj, out)
    return "".join(out).encode("utf-8")

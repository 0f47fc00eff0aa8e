"""Kubernetes resource quantities ("1Mi", "500M", "1e6", "1.5Gi"), as `resource.Quantity` has them.

Owns parsing a quantity to its exact value and format (BinarySI, DecimalSI, DecimalExponent)
and printing a value back in a quantity's format, canonically. Pure: must not know what a
quantity limits.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_QUANTITY = re.compile(
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE]?)"
)
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_EXPONENTS = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_SUFFIXES = {exponent: suffix for suffix, exponent in _DECIMAL_EXPONENTS.items()}


def _quantity(text: str) -> tuple[Fraction, str]:
    """A Kubernetes quantity's exact value and format (BinarySI, DecimalSI, DecimalExponent)."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid quantity {text!r}")
    number, suffix = Fraction(match.group(1)), match.group(2)
    if suffix in _BINARY_SUFFIXES[1:]:
        return number * 1024 ** _BINARY_SUFFIXES.index(suffix), "BinarySI"
    if suffix[:1] in ("e", "E") and suffix[1:]:
        return number * Fraction(10) ** int(suffix[1:]), "DecimalExponent"
    return number * Fraction(10) ** _DECIMAL_EXPONENTS[suffix], "DecimalSI"


def parse_quantity(text: str) -> int:
    """A Kubernetes quantity ("1Mi", "500M", "1e6", "1.5Gi", "100") as an integer.

    Suffixes Ki..Ei are powers of 1024, m k M G T P E powers of 1000, e<N> of
    10.  A fractional result is rounded up, as ``Quantity.Value()`` does.
    Raises ValueError on anything else.
    """
    value, _ = _quantity(text)
    return math.ceil(value)


def format_quantity(value: int, like: str) -> str:
    """``value`` as ``Quantity.String()`` prints it in the format of the quantity ``like``.

    Canonical form: BinarySI uses the largest exact 1024-power suffix (values
    below 1024 fall back to DecimalSI); DecimalSI and DecimalExponent use a
    power of 1000, so 1048576 like "1Mi" is "1Mi", 1000000 like "1" is "1M"
    and like "1e3" is "1e6".
    """
    if value == 0:
        return "0"
    _, fmt = _quantity(like)
    if fmt == "BinarySI" and abs(value) >= 1024:
        power = 0
        while value % 1024 == 0 and power < len(_BINARY_SUFFIXES) - 1:
            value //= 1024
            power += 1
        return f"{value}{_BINARY_SUFFIXES[power]}"
    exponent = 0
    while value % 10 == 0:
        value //= 10
        exponent += 1
    value *= 10 ** (exponent % 3)
    exponent -= exponent % 3
    if fmt == "DecimalExponent" or exponent not in _DECIMAL_SUFFIXES:
        return f"{value}e{exponent}" if exponent else str(value)
    return f"{value}{_DECIMAL_SUFFIXES[exponent]}"

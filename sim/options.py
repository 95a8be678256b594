"""Parsing option values typed on the command line (shared by every CLI command)."""

from __future__ import annotations


def parse_literal(text: str):
    """``"none"`` -> None, ``"true"/"yes"/"on"`` -> True, ``"false"/"no"/"off"`` -> False, then int, float, str."""
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for t in (int, float):
        try:
            return t(text)
        except ValueError:
            pass
    return text


def coerce(text: str, default):
    """Parse ``text`` typed like ``default`` (``ValueError`` when it can't be); untyped defaults use :func:`parse_literal`."""
    if isinstance(default, bool):
        v = parse_literal(text)
        if not isinstance(v, bool):
            raise ValueError(f"expected true/false, got {text!r}")
        return v
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if default is None:
        return parse_literal(text)
    return text

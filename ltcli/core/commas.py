"""Comma-separated lists as flags give them (``--one-shot 50,20``, ``--controls reinit:3``)."""

from __future__ import annotations


def comma_list(text: str) -> list[str]:
    """The stripped items of `text`: ``""`` is no item, and an empty item (``"50,,20"``, a
    trailing comma) raises ValueError: a typo must not silently drop a value."""
    if not text.strip():
        return []
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"an empty item in {text!r}")
    return items

"""Column padding by display width, so tables line up with Chinese (and other wide) text.

Python's `f"{s:<20}"` pads by code points, but a terminal shows each CJK character two cells wide,
so a tenant named 研发 would push every later column two cells right. East Asian Wide and Fullwidth
characters count two cells, combining marks none (Unicode's East Asian Width property, UAX #11).
"""

from __future__ import annotations

import unicodedata


def display_width(text: str) -> int:
    """Terminal cells `text` occupies."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def ljust(text: str, width: int) -> str:
    """`text` padded with spaces on the right to `width` cells (longer text is left as it is)."""
    return text + " " * max(0, width - display_width(text))

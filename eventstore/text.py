"""Text the store keeps must be UTF-8.

Python hands command-line arguments and file names whose bytes are not UTF-8 to the
program surrogate-escaped (PEP 383): ``--model $'m\\xff'`` arrives as ``'m\\udcff'``, which
no UTF-8 encoder (msgpack, JSON, the database) accepts. ``check_text`` refuses such a value
with one line naming it, before anything is written.
"""

from __future__ import annotations

from typing import Any

from .errors import InputError

# How messages name RunStarted's text fields.
FIELD_NAMES = {
    "model": "the model name (--model)",
    "algorithm": "the algorithm name (--algorithm)",
    "input_path": "the input path",
    "imported_from": "the legacy database's location",
    "params": "params",
}


def not_utf8(value: str) -> int | None:
    """The first byte of ``value`` that is not UTF-8 (a surrogate escape), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return ord(value[e.start]) & 0xFF
    return None


def check_text(value: Any, what: str) -> None:
    """``InputError`` if ``value`` (a string, or a dict or list holding strings, keys
    included) holds text that is not UTF-8."""
    if isinstance(value, str):
        byte = not_utf8(value)
        if byte is not None:
            shown = repr(value.encode("utf-8", "surrogateescape"))[1:]
            hint = (
                "rename the file, or give it through a link with a UTF-8 name"
                if "path" in what
                else "give it in UTF-8"
            )
            raise InputError(
                f"{what} {shown} holds the byte 0x{byte:02X}, which is not UTF-8; the store "
                f"keeps names and paths as UTF-8 text: {hint}"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"{what} key")
            check_text(item, f"{what}[{key!r}]" if not_utf8(str(key)) is None else what)
    elif isinstance(value, list | tuple):
        for item in value:
            check_text(item, what)


def check_fields(event: Any) -> None:
    """``check_text`` on every field of an event (a msgspec struct)."""
    for name in event.__struct_fields__:
        check_text(getattr(event, name), FIELD_NAMES.get(name, name))

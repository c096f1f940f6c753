"""Caffe's ``.prototxt`` (protobuf text format) read into plain dicts, without protobuf or ``caffe.proto``.

``parse_prototxt(text)`` -> ``{"name": ["net"], "layer": [{"name": ["conv1"], "type": ["Convolution"],
"convolution_param": [{"num_output": [64], ...}], ...}, ...]}``: every field is a list (protobuf fields
repeat). Nesting is bounded, so a hostile file cannot exhaust the stack.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["parse_prototxt", "read_prototxt", "PrototxtError", "first"]

MAX_DEPTH = 32
TOKEN = re.compile(r"""\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{}:\[\],;<>])|([^\s{}:\[\],;<>"'#]+))""")


class PrototxtError(ValueError):
    """A prototxt that is not well-formed protobuf text."""


def _tokens(text: str, where: str):
    pos, line = 0, 1
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip() == "":
                return
            raise PrototxtError(f"{where}:{line}: cannot read {text[pos:pos + 20]!r}")
        line += text.count("\n", pos, m.end())
        pos = m.end()
        comment, string, punct, word = m.groups()
        if comment is not None:
            continue
        if string is not None:
            yield "str", bytes(string[1:-1], "utf-8").decode("unicode_escape"), line
        elif punct is not None:
            yield punct, punct, line
        elif word is not None:
            yield "word", word, line


def _scalar(word: str) -> Any:
    if re.fullmatch(r"[-+]?\d+", word):
        return int(word)
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?[fF]?|[-+]?(inf|nan)", word, re.IGNORECASE):
        return float(word.rstrip("fF"))
    if word in ("true", "True"):
        return True
    if word in ("false", "False"):
        return False
    return word  # an enum value: MAX, AVE, SUM, ...


def parse_prototxt(text: str, where: str = "prototxt") -> dict[str, list]:
    tokens = list(_tokens(text, where))
    pos, depth = 0, 0

    def message(closing: str | None) -> dict[str, list]:
        nonlocal pos, depth
        depth += 1
        if depth > MAX_DEPTH:
            raise PrototxtError(f"{where}: messages nested more than {MAX_DEPTH} deep")
        out: dict[str, list] = {}
        while pos < len(tokens):
            kind, value, line = tokens[pos]
            if kind in ("}", ">"):
                if closing is None:
                    raise PrototxtError(f"{where}:{line}: unexpected {value!r}")
                pos += 1
                depth -= 1
                return out
            if kind in (",", ";"):
                pos += 1
                continue
            if kind != "word":
                raise PrototxtError(f"{where}:{line}: expected a field name, got {value!r}")
            name, pos = value, pos + 1
            if pos < len(tokens) and tokens[pos][0] == ":":
                pos += 1
            if pos >= len(tokens):
                raise PrototxtError(f"{where}:{line}: field {name!r} has no value")
            kind, value, line = tokens[pos]
            if kind in ("{", "<"):
                pos += 1
                out.setdefault(name, []).append(message(kind))
            elif kind == "[":
                pos += 1
                while pos < len(tokens) and tokens[pos][0] != "]":
                    if tokens[pos][0] != ",":
                        out.setdefault(name, []).append(_value(tokens[pos], where))
                    pos += 1
                pos += 1
            else:
                out.setdefault(name, []).append(_value(tokens[pos], where))
                pos += 1
        if closing is not None:
            raise PrototxtError(f"{where}: a message is not closed (missing '}}')")
        depth -= 1
        return out

    return message(None)


def _value(token: tuple[str, str, int], where: str) -> Any:
    kind, value, line = token
    if kind == "str":
        return value
    if kind == "word":
        return _scalar(value)
    raise PrototxtError(f"{where}:{line}: expected a value, got {value!r}")


def read_prototxt(path: str, max_bytes: int = 64 << 20) -> dict[str, list]:
    import os

    size = os.path.getsize(path)
    if size > max_bytes:
        raise PrototxtError(f"{path}: {size:,} bytes, more than the {max_bytes:,} a prototxt may have here")
    with open(path, encoding="utf-8", errors="replace") as fh:
        return parse_prototxt(fh.read(), str(path))


def first(msg: dict[str, list], key: str, default: Any = None) -> Any:
    """The (last-set) value of a singular field, or ``default``."""
    values = msg.get(key)
    return values[-1] if values else default

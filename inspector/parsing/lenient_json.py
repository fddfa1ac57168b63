"""Finding the JSON object in an answer: strict first, else a lenient reader for cut-off or sloppy JSON."""

from __future__ import annotations

import json
import re

# --------------------------------------------------------------------------------------------------------------
# JSON, strict and lenient
# --------------------------------------------------------------------------------------------------------------

_INCOMPLETE = object()
_MAX_DEPTH = 24


class _LenientJson:
    """Reads a JSON-like object that may be cut off, single-quoted, or written with bare words.

    Values cut off by the end of the text are dropped (a number at the very end may be missing digits), but
    containers keep their complete entries, so '{"brand": "Nike", "sizes": {"6.5": 115, "7' gives the brand and
    size 6.5.
    """

    def __init__(self, text: str, start: int):
        self.text = text
        self.pos = start
        self.truncated = False

    def _skip_space(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        self.pos = pos

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

    def value(self, depth: int = 0) -> object:
        self._skip_space()
        if self._at_end() or depth > _MAX_DEPTH:
            self.truncated = True
            return _INCOMPLETE
        char = self.text[self.pos]
        if char == "{":
            return self._object(depth)
        if char == "[":
            return self._array(depth)
        if char in "\"'":
            return self._string()
        return self._bare()

    def _object(self, depth: int) -> object:
        result: dict = {}
        self.pos += 1
        while True:
            self._skip_space()
            while not self._at_end() and self.text[self.pos] == ",":
                self.pos += 1
                self._skip_space()
            if self._at_end():
                self.truncated = True
                return result
            if self.text[self.pos] == "}":
                self.pos += 1
                return result
            if self.text[self.pos] in "\"'":
                key = self._string()
            else:
                match = self._BARE_KEY_RE.match(self.text, self.pos)
                if not match:
                    return result  # junk: stop here and keep what we have
                key = match.group(0).strip()
                self.pos = match.end()
            if key is _INCOMPLETE:
                return result
            self._skip_space()
            if self._at_end():
                self.truncated = True
                return result
            if self.text[self.pos] not in ":=":
                return result
            self.pos += 1
            item = self.value(depth + 1)
            if item is _INCOMPLETE:
                return result
            result.setdefault(str(key), item)
            if self.truncated:
                return result
            self._skip_space()
            if not self._at_end() and self.text[self.pos] == "}":
                self.pos += 1
                return result
            if not self._at_end() and self.text[self.pos] not in ",\"'":
                return result

    def _array(self, depth: int) -> object:
        result: list = []
        self.pos += 1
        while True:
            self._skip_space()
            while not self._at_end() and self.text[self.pos] == ",":
                self.pos += 1
                self._skip_space()
            if self._at_end():
                self.truncated = True
                return result
            if self.text[self.pos] == "]":
                self.pos += 1
                return result
            item = self.value(depth + 1)
            if item is _INCOMPLETE:
                return result
            result.append(item)
            if self.truncated:
                return result
            self._skip_space()
            if not self._at_end() and self.text[self.pos] == "]":
                self.pos += 1
                return result
            if not self._at_end() and self.text[self.pos] != ",":
                return result

    _ESCAPES = {
        "n": "\n",
        "t": "\t",
        "r": "\r",
        "b": "\b",
        "f": "\f",
        "/": "/",
        "\\": "\\",
        '"': '"',
        "'": "'",
    }

    def _string(self) -> object:
        quote = self.text[self.pos]
        text = self.text
        pos = self.pos + 1
        parts: list[str] = []
        while pos < len(text):
            char = text[pos]
            if char == quote:
                self.pos = pos + 1
                return "".join(parts)
            if char == "\\":
                if pos + 1 >= len(text):
                    break
                code = text[pos + 1]
                if code == "u":
                    digits = text[pos + 2 : pos + 6]
                    if len(digits) < 4:
                        break
                    try:
                        parts.append(chr(int(digits, 16)))
                    except ValueError:
                        parts.append(digits)
                    pos += 6
                    continue
                parts.append(self._ESCAPES.get(code, code))
                pos += 2
                continue
            parts.append(char)
            pos += 1
        self.pos = len(text)
        self.truncated = True
        return _INCOMPLETE

    _BARE_RE = re.compile(r"[^,}\]\n]*")
    _BARE_KEY_RE = re.compile(r"[^:,{}\[\]\"'\n]+")
    _JSON_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")

    def _bare(self) -> object:
        match = self._BARE_RE.match(self.text, self.pos)
        token = match.group(0) if match else ""
        self.pos += len(token)
        if self._at_end():
            # The token may have been cut off ("11" of "115", "nu" of "null"): drop it.
            self.truncated = True
            return _INCOMPLETE
        word = token.strip()
        lowered = word.lower()
        if lowered in ("null", "none", "nil"):
            return None
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        if self._JSON_NUMBER_RE.fullmatch(word):
            try:
                return float(word) if any(c in word for c in ".eE") else int(word)
            except ValueError:
                return word
        return word


def _find_json(text: str) -> tuple[dict | None, int, int]:
    """The first JSON object in `text` (or first object of a JSON list) and the span it covers."""
    decoder = json.JSONDecoder()
    starts = [match.start() for match in re.finditer(r"[{\[]", text)][:20]
    for start in starts:
        try:
            value, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, list):
            value = next((item for item in value if isinstance(item, dict)), None)
        if isinstance(value, dict) and value:
            return value, start, end
    brace = text.find("{")
    if brace < 0:
        return None, 0, 0
    reader = _LenientJson(text, brace)
    value = reader.value()
    if isinstance(value, dict) and value:
        return value, brace, reader.pos
    return None, 0, 0

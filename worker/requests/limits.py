"""Bounds on a job's input, checked before the tokenizer sees it: the input's size, text that is not valid
Unicode, and a prompt whose length in characters alone shows it cannot fit the context.

Tokenizing is the first costly step of a job (a 5 MB prompt is ~4 M tokens: tens of seconds and a gigabyte
of memory, for a refusal); the size of the input and the length of its text are known at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Room in the default input limit for everything but the prompt: tools, JSON schemas, parameters.
INPUT_ALLOWANCE_CHARS = 1 << 20
# A number, true, false or null, counted as one short JSON value (the exact digits do not matter for a bound).
SCALAR_CHARS = 8

Loc = tuple[str | int, ...]

# (problem, fix) for a string holding a lone surrogate.
INVALID_TEXT = (
    "is not valid Unicode: it holds a lone UTF-16 surrogate (such as \"\\ud800\"), which no text encoding can carry",
    "Send the text as UTF-8; a character outside the Basic Multilingual Plane is one \\u escape pair "
    "(high then low surrogate), never half of one.",
)


def longest_token_chars(tokenizer: Any) -> int:
    """Characters of the tokenizer's longest token (special tokens included): no token covers more text.

    Byte-level BPE vocabularies spell each byte as one character and SentencePiece marks a space with one,
    so a token's spelling is never shorter than the text it stands for.
    """
    return max(map(len, tokenizer.get_vocab()), default=1)


@dataclass(frozen=True)
class InputLimits:
    context_tokens: int
    max_token_chars: int
    max_input_chars: int

    @classmethod
    def of(cls, tokenizer: Any, context_tokens: int, max_input_chars: int | None = None) -> InputLimits:
        """The limits for a model: MAX_INPUT_CHARS when set, else what its context can hold plus an allowance."""
        longest = longest_token_chars(tokenizer)
        return cls(context_tokens, longest, max_input_chars or context_tokens * longest + INPUT_ALLOWANCE_CHARS)

    @property
    def max_prompt_chars(self) -> int:
        """A text longer than this is more tokens than the context holds, whatever the tokenizer makes of it."""
        return self.context_tokens * self.max_token_chars

    def input_too_large(self, value: Any) -> int | None:
        """The input's size in JSON characters when it is over MAX_INPUT_CHARS (counted up to the limit), else None."""
        size = json_chars(value, stop_after=self.max_input_chars)
        return size if size > self.max_input_chars else None

    def prompt_too_long(self, chars: int) -> bool:
        return chars > self.max_prompt_chars

    def describe_input_limit(self, size: int) -> tuple[str, str]:
        """(problem, fix) for an input over the limit."""
        return (
            f"the job input is more than {self.max_input_chars:,} characters of JSON (counted {size:,} before stopping)",
            "Send a shorter prompt; MAX_INPUT_CHARS raises the limit (its default is what this model's "
            f"context of {self.context_tokens} tokens can hold, plus {INPUT_ALLOWANCE_CHARS:,} for the other fields).",
        )

    def describe_prompt_limit(self, chars: int) -> tuple[str, str]:
        """(problem, fix) for a prompt that cannot fit the context."""
        return (
            f"the prompt is {chars:,} characters: more than the {self.context_tokens} tokens of this model's context "
            f"can hold (no token is longer than {self.max_token_chars} characters)",
            "Shorten the prompt (or raise MAX_MODEL_LEN if the model supports a longer context).",
        )


def json_chars(value: Any, stop_after: int) -> int:
    """About how many characters `value` takes as JSON: strings and keys by length, other values by
    SCALAR_CHARS. Stops counting once past `stop_after`, so a huge input costs no more than the limit."""
    total = 0
    pending = [value]
    while pending and total <= stop_after:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item) + 3  # quotes and a separator
        elif isinstance(item, dict):
            total += 2
            for key, child in item.items():
                total += len(key) + 4 if isinstance(key, str) else SCALAR_CHARS
                pending.append(child)
        elif isinstance(item, (list, tuple)):
            total += 2
            pending.extend(item)
        else:
            total += SCALAR_CHARS
    return total


def text_chars(value: Any) -> int:
    """Characters of all the strings in `value` (a chat's messages: contents, parts, names)."""
    total = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return total


def first_invalid_text(value: Any) -> Loc | None:
    """Where `value` holds a string that is not valid Unicode (a lone surrogate such as "\\ud800", which JSON
    allows as an escape but no text encoding can carry), as a path of keys and indexes; None if all are valid."""
    pending: list[tuple[Loc, Any]] = [((), value)]
    while pending:
        loc, item = pending.pop()
        if isinstance(item, str):
            if not _is_valid_unicode(item):
                return loc
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if isinstance(key, str) and not _is_valid_unicode(key):
                    return loc
                pending.append(((*loc, key), child))
        elif isinstance(item, (list, tuple)):
            pending.extend(((*loc, index), child) for index, child in reversed(list(enumerate(item))))
    return None


def _is_valid_unicode(text: str) -> bool:
    # isascii() is a flag check on CPython's compact strings: most text is never encoded. Encoding is
    # several times faster than a regex scan for surrogates; the copy is bounded by MAX_INPUT_CHARS and dropped.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def field_path(prefix: str, loc: Loc) -> str:
    """A path as native job errors name fields: input.messages[0].content."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path

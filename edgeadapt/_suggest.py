"""'Did you mean' for unknown names: one message for methods, models, devices and corruptions,
so every lookup that refuses a name says it the same way."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches", "unknown_name_message"]

_TIE = 0.05  # similarity within this of the best match also counts as a best match


def close_matches(name: object, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` of `choices` that look like `name`, best first; case is ignored. Only those
    about as close as the best are kept: 'ecota' suggests 'ecotta', not 'cotta' and 'eata' too,
    while 'resnet21' suggests both 'resnet20' and 'resnet32'."""
    by_folded: dict[str, str] = {}
    for choice in choices:
        by_folded.setdefault(choice.lower(), choice)
    wanted = str(name).lower()
    found = difflib.get_close_matches(wanted, list(by_folded), n=n, cutoff=0.6)
    score = {f: difflib.SequenceMatcher(None, wanted, f).ratio() for f in found}
    return [by_folded[f] for f in found if score[f] >= score[found[0]] - _TIE]


def unknown_name_message(kind: str, name: object, choices: Iterable[str], note: str = "") -> str:
    """E.g. "unknown method 'ecota'; did you mean 'ecotta'? available: ['cotta', ...]".

    `choices` are listed in the order given; `note` (e.g. where the names come from) follows
    the list after a space."""
    available = list(choices)
    close = close_matches(name, available)
    hint = f"did you mean {' or '.join(map(repr, sorted(close)))}? " if close else ""
    return f"unknown {kind} {str(name)!r}; {hint}available: {available}" + (
        f" {note}" if note else ""
    )

"""Does a re-run match what was recorded? The one comparison (and the one wording) for every run that resumes
or reuses another: a training run and its checkpoint, a fidelity run and its plan, a search and its settings
file, a fidelity run reusing another's stand-alone scores.

Settings are compared as flat ``section.key`` mappings. Each caller says, as data, which keys do not count,
which may change, which may only grow, and the defaults of keys the tool gained after a record was written
(absent from the record and at that default: the same run, so a run started by an older version resumes).

Pure Python: no torch, no Ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from pipeline.shared.errors import UserError

RESUME_HINT = "re-run with the same settings to resume it, or choose another run name"


@dataclasses.dataclass(frozen=True)
class Rules:
    """What may differ between a record and the current settings (keys are flat ``section.key`` names)."""

    ignored: Collection[str] = ()  # never count (e.g. supernet-only keys for a stand-alone model)
    may_change: Collection[str] = ()  # may differ freely (a resumed run's epochs, its data root)
    may_grow: Collection[str] = ()  # numbers that may only increase (a search's generations)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # of keys added since: absent = default


@dataclasses.dataclass(frozen=True)
class Difference:
    key: str
    recorded: Any
    current: Any
    grows: bool  # an allowed increase of a ``may_grow`` key

    def describe(self) -> str:
        return f"{self.key} = {self.recorded!r} (now {self.current!r})"


_ABSENT = object()


def flatten(sections: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` as ``{"train.lr": 1}`` (one level of sections; values stay as they are)."""
    flat: dict[str, Any] = {}
    for name, value in sections.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and not prefix:
            flat.update(flatten(value, f"{key}."))
        else:
            flat[key] = value
    return flat


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any], rules: Rules) -> list[Difference]:
    """Every key (sorted) in which ``current`` differs from ``recorded`` beyond what ``rules`` lets pass; an
    allowed growth is listed too, with ``grows`` set, so the caller can record it."""
    found = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key, _ABSENT), current.get(key, _ABSENT)
        if old == new or key in rules.ignored or key in rules.may_change:
            continue
        if old is _ABSENT and key in rules.defaults and new == rules.defaults[key]:
            continue  # a setting the tool gained since the record was written, at its default
        old, new = (None if v is _ABSENT else v for v in (old, new))
        grows = key in rules.may_grow and _is_number(old) and _is_number(new) and new > old
        found.append(Difference(key, old, new, grows))
    return found


def check_recorded(
    subject: str, recorded: Mapping[str, Any], current: Mapping[str, Any], rules: Rules, hint: str = RESUME_HINT
) -> list[Difference]:
    """Refuse (one line, the first differing key) a ``current`` that does not match ``recorded`` under ``rules``;
    return the allowed growths. ``subject`` names what was recorded ("run 'x'", "search 's'")."""
    found = differences(recorded, current, rules)
    refused = [d for d in found if not d.grows]
    if refused:
        raise UserError(f"{subject} was made with {refused[0].describe()}; {hint}")
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

"""Resource constraints on candidates, and the check that they leave any of the space to search.

Params and MACs are exact closed-form counts, so a candidate outside them is rejected before anything is
evaluated. Latency is a measurement, so it can only be checked by an evaluator (which then skips scoring).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.core.complexity import space_ranges
from pipeline.core.space import SearchSpace
from pipeline.shared.errors import UserError


@dataclasses.dataclass(frozen=True)
class Constraints:
    """The constraints' part of the search settings (``SearchSettings.constraints``), keys of the task's
    ``search`` section by the same names; None is no limit. Each value has been checked by the task schema; only
    what relates two of them is checked here."""

    min_params: int | None = None
    max_params: int | None = None
    max_macs: int | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.min_params is not None and self.max_params is not None and self.min_params > self.max_params:
            raise UserError(f"constraints: min_params {self.min_params:,} exceeds max_params {self.max_params:,}")

    def violation(self, params: int, macs: int, latency_ms: float | None = None) -> str | None:
        """Why a candidate with these counts is outside the constraints (None when it is inside). ``latency_ms`` is a
        latency model's prediction when the search has one (measured latency is checked by the evaluators)."""
        if self.min_params is not None and params < self.min_params:
            return f"params {params:,} < min_params {self.min_params:,}"
        if self.max_params is not None and params > self.max_params:
            return f"params {params:,} > max_params {self.max_params:,}"
        if self.max_macs is not None and macs > self.max_macs:
            return f"MACs {macs:,} > max_macs {self.max_macs:,}"
        if self.max_latency_ms is not None and latency_ms is not None and latency_ms > self.max_latency_ms:
            return f"predicted latency {latency_ms:.3g} ms > max_latency_ms {self.max_latency_ms:g}"
        return None

    def check_feasible(self, space: SearchSpace) -> None:
        """Fail with a clear message when the counting constraints exclude the whole space.

        Params and MACs grow in every gene, so the smallest and largest members bound what is reachable; a
        window inside those bounds that no architecture hits is caught later by the bounded sampler.
        """
        ranges = space_ranges(space)
        (p_lo, p_hi), (m_lo, m_hi) = ranges["params"], ranges["macs"]
        where = f"search space {space.name!r} (params {p_lo:,} .. {p_hi:,}, MACs {m_lo:,} .. {m_hi:,})"
        if self.max_params is not None and self.max_params < p_lo:
            raise UserError(
                f"max_params {self.max_params:,} is below the smallest architecture of {where}; nothing to search"
            )
        if self.min_params is not None and self.min_params > p_hi:
            raise UserError(
                f"min_params {self.min_params:,} is above the largest architecture of {where}; nothing to search"
            )
        if self.max_macs is not None and self.max_macs < m_lo:
            raise UserError(
                f"max_macs {self.max_macs:,} is below the smallest architecture of {where}; nothing to search"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

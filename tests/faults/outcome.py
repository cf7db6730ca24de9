"""What a fault scenario came to: the ids tracked against the ids stored (and forwarded)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..chdb_elsewhere import query_elsewhere

# Per id, its rows as stored (merges may have collapsed some copies already) and as the
# modeler reads them (FINAL), from one process opening the stopped gateway's directory.
_STORED = """
SELECT 'plain', toString(event_id), count() FROM headwater.events GROUP BY event_id
UNION ALL
SELECT 'final', toString(event_id), count() FROM headwater.events FINAL GROUP BY event_id
UNION ALL
SELECT 'errors', '', count() FROM headwater.ingest_errors
"""


@dataclass(frozen=True)
class Stored:
    """The `events` table of a stopped gateway: rows per event id, plain and FINAL."""

    plain: Counter[str]
    final: Counter[str]
    error_rows: int  # rows of ingest_errors: events the gateway refused

    @classmethod
    def read(cls, chdb_dir: Path) -> Stored:
        plain: Counter[str] = Counter()
        final: Counter[str] = Counter()
        errors = 0
        for kind, event_id, rows in query_elsewhere(chdb_dir, _STORED):
            if kind == "errors":
                errors = int(rows)
            else:
                (plain if kind == "plain" else final)[event_id] = int(rows)
        return cls(plain=plain, final=final, error_rows=errors)


@dataclass(frozen=True)
class Fault:
    """One fault: what it was, and when it began and was repaired (monotonic seconds)."""

    name: str
    began: float
    ended: float


def copies(rows: Counter[str]) -> int:
    """Rows beyond the first of each id: `count() - uniqExact(event_id)`."""
    return sum(rows.values()) - len(rows)


@dataclass(frozen=True)
class Outcome:
    """A scenario's result record (one row of the chaos table)."""

    scenario: str
    tracked: frozenset[str]  # every id track() returned, in every process of the run
    refused: int  # track() calls that returned None (not accepted, so not owed)
    stored: Stored
    faults: list[Fault]
    recover_seconds: list[float | None]  # per fault: its end until the backlog was settled
    sdk_drops: dict[str, int]  # the clients' dropped_by_reason, summed
    dropped_ids: frozenset[str]  # ids the clients gave up on (their on_error)
    seconds: float  # the run, from the first start to the gateway's stop
    forwarded: Counter[str] | None = None  # uuid → times the PostHog stand-in got it
    forward_lag_peak: float | None = None
    notes: dict[str, int] = field(default_factory=dict)  # scenario-specific counts

    @property
    def events(self) -> int:
        return len(self.tracked)

    @property
    def lost(self) -> frozenset[str]:
        """Ids track() returned that are not stored."""
        return self.tracked - self.stored.plain.keys()

    @property
    def unexpected(self) -> frozenset[str]:
        """Ids stored that track() never returned."""
        return frozenset(self.stored.plain.keys() - self.tracked)

    @property
    def twice_before_merge(self) -> int:
        return copies(self.stored.plain)

    @property
    def twice_after_final(self) -> int:
        return copies(self.stored.final)

    @property
    def recovered_in(self) -> float | None:
        """The longest recovery of the run (None: some fault's backlog never settled)."""
        times = self.recover_seconds
        return None if not times or None in times else max(t for t in times if t is not None)

    @property
    def forward_lost(self) -> int | None:
        if self.forwarded is None:
            return None
        return len(self.tracked - self.forwarded.keys())

    @property
    def forward_twice(self) -> int | None:
        return None if self.forwarded is None else copies(self.forwarded)

    def summary(self) -> str:
        """One line for a test's failure message and the chaos log."""
        lost = sorted(self.lost)
        recover = self.recovered_in
        return (
            f"{self.scenario}: {self.events} events, {len(self.faults)} faults,"
            f" lost {len(lost)} {lost[:5]} ({len(self.lost & self.dropped_ids)} given up on by"
            f" the SDK), unexpected {len(self.unexpected)},"
            f" twice before merge {self.twice_before_merge},"
            f" twice after FINAL {self.twice_after_final},"
            f" recovered in {'never' if recover is None else f'{recover:.1f}s'},"
            f" SDK drops {self.sdk_drops}, refused by track() {self.refused},"
            f" ingest_errors rows {self.stored.error_rows}, notes {self.notes}"
        )

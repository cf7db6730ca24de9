"""The ingestion path every endpoint shares: check, dedupe, store (forwarding reads the
store: `_forwarder`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

from headwater.sdk import BatchResult, Rejection

from ._committer import GroupCommitter
from ._dead_letters import DeadLetters, ErrorRow, error_row
from ._dedupe import Claim, DedupeStore
from ._errors import DedupeUnavailable, Unavailable
from ._events import Columns, Context, EventRow, Incoming, Invalid, RowBlock, to_row
from ._metrics import Metrics
from ._plan import PlanEnforcer
from ._sink import EventSink

logger = logging.getLogger("headwater.gateway")


class Ingestor:
    """Turns a request's events into stored rows and a per-event answer."""

    def __init__(
        self,
        *,
        dedupe: DedupeStore,
        committer: GroupCommitter[RowBlock],
        sink: EventSink,
        metrics: Metrics,
        fail_closed: bool,
        pending_wait: float,
        dead_letter_rows: int,
        plans: PlanEnforcer | None = None,
    ) -> None:
        self._plans = plans
        self._dedupe = dedupe
        self._committer = committer
        self._metrics = metrics
        self._fail_closed = fail_closed
        self._pending_wait = pending_wait
        self.dedupe_degraded = False
        self._confirming: set[asyncio.Task[None]] = set()
        self._to_confirm: list[str] = []
        self._dead_letters = DeadLetters(
            sink.insert_errors, metrics=metrics, wait=pending_wait, max_rows=dead_letter_rows
        )

    def admit(self) -> None:
        """Raise `Overloaded` while ClickHouse cannot take more (before a body is read)."""
        self._committer.admit()

    async def ingest(
        self,
        ctx: Context,
        events: Sequence[Incoming | Invalid] | Columns,
        *,
        keep_rejected: bool = True,
    ) -> BatchResult:
        """Store the valid events of one request; say what happened to each.

        Refused events are kept in `ingest_errors` unless `keep_rejected` is false (a
        replay of that table, whose rows are there already).
        """
        counters = self._metrics.source(ctx.source)
        if isinstance(events, Columns):
            # Checked all at once when they can be (no tracking plan reads them): the
            # common case, with no Python per event.
            planned = self._plans is not None and self._plans.covers(ctx.project)
            block = None if planned else events.block(ctx)
            if block is not None:
                self._metrics.batches_as_columns.inc()
                counters.received.inc(len(block))
                return await self._accept(ctx, block, [])
            self._metrics.batches_one_by_one.inc()
            events = events.items()
        counters.received.inc(len(events))
        rows: list[EventRow] = []
        rejected: list[Rejection] = []
        dead: list[ErrorRow] = []
        for index, item in enumerate(events):
            outcome = item.reason if isinstance(item, Invalid) else self._check(ctx, item)
            if isinstance(outcome, EventRow):
                rows.append(outcome)
                continue
            event_id = item.event_id if isinstance(item.event_id, str) and item.event_id else None
            rejected.append(Rejection(index=index, reason=outcome, event_id=event_id))
            raw = item.raw if isinstance(item, Invalid) else item.text()
            dead.append(error_row(ctx, index, outcome, raw))
        result = await self._accept(ctx, RowBlock.of_rows(ctx, rows), rejected)
        if dead and keep_rejected:
            await self._dead_letters.keep(dead)
        if rejected:
            counters.rejected.inc(len(rejected))
        return result

    async def _accept(
        self, ctx: Context, block: RowBlock, rejected: list[Rejection]
    ) -> BatchResult:
        """Store the rows not stored before."""
        fresh, duplicates = await self._store(block)
        counters = self._metrics.source(ctx.source)
        counters.accepted.inc(len(fresh))
        if duplicates:  # each increment takes a lock: none for what did not happen
            counters.duplicates.inc(duplicates)
        return BatchResult(accepted=len(fresh), duplicates=duplicates, rejected=rejected)

    def _check(self, ctx: Context, item: Incoming) -> EventRow | str:
        """The row, or why not: the tracking plan first (it may flag), then the checks."""
        if self._plans is not None:
            refused = self._plans.review(ctx.project, item)
            if refused is not None:
                return refused
        return to_row(item, ctx)

    async def _store(self, block: RowBlock) -> tuple[RowBlock, int]:
        """(the rows stored now, how many were duplicates: within the request or before)."""
        ids = block.event_ids
        if len(set(ids)) < len(ids):  # an id twice in one request: its first row counts
            firsts: dict[str, int] = {}
            for index, event_id in enumerate(ids):
                firsts.setdefault(event_id, index)
            block = block.take(list(firsts.values()))
        within = len(ids) - len(block)
        ids = block.event_ids
        ticket = self._dedupe.ticket(block.project, ids)
        claimed, seen = await self._claim(block.project, ids, ticket)
        fresh = block if claimed is None or len(claimed) == len(block) else block.take(claimed)
        try:
            await self._committer.submit(fresh, len(fresh), fresh.size)
        except BaseException:  # not stored, or not known to be: free the ids for the retry
            if claimed:
                await self._settle(self._dedupe.release(ticket, block.project, fresh.event_ids))
            raise
        if claimed:
            # Stored: the answer does not wait for this bookkeeping. Until it lands, a
            # resent id reads as pending, is waited for, and is then found stored.
            if not self._to_confirm:
                asyncio.get_running_loop().call_soon(self._confirm_queued)
            self._to_confirm.append(ticket)
        return fresh, within + seen

    def _confirm_queued(self) -> None:
        """One confirm for every request of this loop tick (one task, not one each)."""
        tickets, self._to_confirm = self._to_confirm, []
        task = asyncio.get_running_loop().create_task(self._settle(self._dedupe.confirm(tickets)))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def settled(self) -> None:
        """Wait for the confirms still on their way, and the dead letters as long as a
        request would (graceful shutdown)."""
        while self._confirming or self._to_confirm:
            await asyncio.sleep(0)  # queued tickets get their task on the next tick
            await asyncio.gather(*self._confirming)
        await self._dead_letters.close()

    async def _claim(
        self, project: str, ids: list[str], ticket: str
    ) -> tuple[list[int] | None, int]:
        """(indices of the ids now ours, count already stored); None: Redis is down and
        we accept anyway."""
        try:
            return await self._claim_waiting(project, ids, ticket)
        except DedupeUnavailable as exc:
            self.dedupe_degraded = True
            if self._fail_closed:
                raise
            logger.warning("dedupe bypassed for %d events: %s", len(ids), exc)
            self._metrics.dedupe_bypassed.inc(len(ids))
            return None, 0

    async def _claim_waiting(
        self, project: str, ids: list[str], ticket: str
    ) -> tuple[list[int], int]:
        """Claim ids; ids another request is inserting right now are waited for."""
        ours: list[int] = []
        seen = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._pending_wait
        pending = list(range(len(ids)))
        asked = ids
        while pending:
            claims = await self._dedupe.claim(project, asked, ticket)
            self.dedupe_degraded = False
            if claims.count(Claim.NEW) == len(claims):  # what nearly every request finds
                ours += pending
                break
            waiting = []
            for index, claim in zip(pending, claims, strict=True):
                if claim == Claim.NEW:
                    ours.append(index)
                elif claim == Claim.SEEN:
                    seen += 1
                else:
                    waiting.append(index)
            if waiting and loop.time() >= deadline:
                await self._settle(self._dedupe.release(ticket, project, [ids[i] for i in ours]))
                raise Unavailable(f"{len(waiting)} events are being stored by another request")
            if waiting:
                await asyncio.sleep(0.01)
            pending = waiting
            asked = [ids[index] for index in waiting]
        return sorted(ours), seen

    async def _settle(self, bookkeeping: Awaitable[None]) -> None:
        try:
            await bookkeeping
        except DedupeUnavailable as exc:  # the pending TTL and the table's dedupe cover it
            logger.warning("dedupe bookkeeping failed: %s", exc)

    async def unreadable(self, ctx: Context, *, reason: str, body: bytes) -> None:
        """Keep a whole body of `ctx`'s request that could not be parsed (index -1)."""
        await self._dead_letters.keep([error_row(ctx, -1, reason, body)])

"""Build records, append them to the spool, and run the spool's readers.

The spool is the write-ahead log of every record; the ledger and the Kafka
exporter each drain it through their own cursor (see spool.py).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio
import attrs
import orjson

from router_core.accounting.frames import FrameKind
from router_core.accounting.records import (
    AuditRecord,
    Outcome,
    TokenCounts,
    UsageRecord,
    price,
)
from router_core.accounting.wire import audit_to_wire, usage_to_wire
from router_core.config import RouterConfig, UsageSettings
from router_core.config_enums import Fsync
from router_core.workers import spool_name
from router_server.usage import ledger as ledger_module
from router_server.usage.kafka_export import KafkaExporter
from router_server.usage.spool import Spool
from router_server.usage.trace import Unrecorded, UsageTrace

log = logging.getLogger("router.usage")


def now_us() -> int:
    return time.time_ns() // 1000


class Observer(Protocol):
    """Told of every answered request: the metrics and the operator page both
    count from here, so they count the same requests."""

    def observe(self, record: UsageRecord) -> None:
        """A request's usage record, as it is written."""

    def observe_unrecorded(self, answer: Unrecorded) -> None:
        """A request answered without a usage record."""


@attrs.define
class Recorder:
    # The `usage` section the spool, ledger and exporter were opened with (it
    # takes effect on restart). Nothing a reload changes is kept here: prices
    # come with each record's trace.
    settings: UsageSettings
    spool: Spool
    ledger: ledger_module.UsageLedger | None
    exporter: KafkaExporter | None
    instance: str = attrs.field(factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    write_failures: int = 0
    log: logging.Logger = log
    observers: list[Observer] = attrs.field(factory=list)

    @classmethod
    def open(cls, config: RouterConfig, env: Mapping[str, str], *, slot: int = 0) -> Recorder:
        """The recorder of worker `slot` (0: a single process): its own spool,
        the ledger and topic every worker shares (both dedupe by record id)."""
        usage = config.usage
        root = Path(config.state.dir)
        readers = (["ledger"] if usage.ledger else []) + (["kafka"] if usage.kafka else [])
        spool = Spool.open(root / spool_name(slot), usage.spool, readers)
        try:
            if spool.recovery.torn or spool.recovery.corrupt:
                log.error("usage spool recovered with damage", extra=attrs.asdict(spool.recovery))
            ledger = ledger_module.UsageLedger(root / "usage.sqlite3") if usage.ledger else None
            exporter = None
            if usage.kafka is not None:
                bootstrap = env[usage.kafka.bootstrap_env]
                exporter = KafkaExporter(usage.kafka, bootstrap, spool.readers["kafka"])
        except BaseException:
            spool.close()  # or its lock outlives this failed start
            raise
        return cls(usage, spool, ledger, exporter)

    async def run(self) -> None:
        """Drain the spool into the ledger and Kafka, and fsync it, until cancelled."""
        async with anyio.create_task_group() as tg:
            if self.ledger is not None:
                tg.start_soon(ledger_module.feed, self.spool.readers["ledger"], self.ledger)
            if self.exporter is not None:
                tg.start_soon(self.exporter.run)
            if self.settings.spool.fsync is Fsync.INTERVAL:
                tg.start_soon(self.spool.sync_forever)

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until every reader has caught up: on shutdown."""
        with anyio.move_on_after(timeout_s):
            while any(r.pending for r in self.spool.readers.values()):  # noqa: ASYNC110
                await anyio.sleep(0.02)  # acks are frequent; polling keeps the readers simple

    async def aclose(self) -> None:
        if self.exporter is not None:
            await self.exporter.aclose()
        self.spool.close()
        if self.ledger is not None:
            self.ledger.close()

    async def _append(self, kind: FrameKind, wire: dict[str, Any], at_us: int) -> None:
        try:
            self.spool.append(kind, orjson.dumps(wire), at_us)
            if self.settings.spool.fsync is Fsync.ALWAYS:
                await self.spool.sync()
        except OSError as exc:
            self.write_failures += 1
            log.critical(
                "usage record could not be written to the spool",
                extra={"error": str(exc), "record": wire},
            )

    async def usage(
        self,
        trace: UsageTrace,
        status: int,
        outcome: Outcome,
        reason: str | None,
        counts: TokenCounts,
        *,
        backend: str | None = None,
        backend_model: str | None = None,
    ) -> None:
        principal, inference = trace.principal, trace.inference
        assert principal is not None
        finished = time.perf_counter()
        model = inference.model if inference else None
        record = UsageRecord(
            record_id=str(uuid.uuid4()),
            request_id=trace.request_id,
            client_request_id=trace.client_request_id or (
                inference.request_id if inference else None
            ),
            organization=principal.organization,
            key_id=principal.key_id,
            route=trace.route,
            operation=inference.operation.value if inference else None,
            model=model,
            backend=backend,
            backend_model=backend_model,
            stream=inference.stream if inference else False,
            started_at_us=trace.started_at_us,
            finished_at_us=trace.started_at_us + int((finished - trace.started) * 1e6),
            latency_ms=round((finished - trace.started) * 1000, 3),
            ttft_ms=(
                None if trace.first_byte is None
                else round((trace.first_byte - trace.started) * 1000, 3)
            ),
            status=status,
            outcome=outcome,
            reason=reason,
            usage=counts,
            cost_nano_usd=price(trace.config, model, counts),
            router_instance=self.instance,
            user=principal.user,
        )  # fmt: skip
        for observer in self.observers:
            observer.observe(record)
        await self._append(FrameKind.USAGE, usage_to_wire(record), now_us())

    def unrecorded(self, trace: UsageTrace, status: int, code: str | None) -> None:
        principal = trace.principal
        answer = Unrecorded(
            trace.route, status, code, time.perf_counter() - trace.started,
            principal.organization if principal else None,
        )  # fmt: skip
        for observer in self.observers:
            observer.observe_unrecorded(answer)

    async def audit(self, trace: UsageTrace, event: str, detail: Mapping[str, Any]) -> None:
        principal = trace.principal
        await self.audit_event(
            event,
            organization=principal.organization if principal else None,
            key_id=principal.key_id if principal else None,
            request_id=trace.request_id,
            detail=detail,
        )

    async def audit_event(
        self,
        event: str,
        *,
        organization: str | None = None,
        key_id: str | None = None,
        request_id: str | None = None,
        detail: Mapping[str, Any],
    ) -> None:
        """An `audit.router.v1` record (also for admin changes, outside any request)."""
        record = AuditRecord(
            record_id=str(uuid.uuid4()),
            at_us=now_us(),
            event=event,
            organization=organization,
            key_id=key_id,
            request_id=request_id,
            detail=dict(detail),
            router_instance=self.instance,
        )
        await self._append(FrameKind.AUDIT, audit_to_wire(record), record.at_us)

    def status(self) -> dict[str, Any]:
        now = now_us()
        ledger = self.spool.readers.get("ledger")
        return {
            "spool": {**self.spool.status(), "write_failures": self.write_failures},
            "ledger": None if ledger is None else {
                "pending_records": ledger.pending,
                "lag_s": _lag(ledger.oldest_unacked_us(), now),
            },
            "kafka": None if self.exporter is None else self.exporter.status(now),
        }  # fmt: skip


def _lag(oldest: int | None, now: int) -> float:
    return 0.0 if oldest is None else round(max(0, now - oldest) / 1e6, 3)

"""The services booking calls, each call with a deadline and the request id."""

from __future__ import annotations

import grpc

from runtime import tls
from runtime.logs import request_id_var
from ticketing.event.v1 import event_pb2_grpc
from ticketing.payment.v1 import payment_pb2_grpc

# Transient failures worth another try within a saga step's budget.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Downstream:
    def __init__(
        self,
        event_target: str,
        payment_target: str,
        timeout_seconds: float,
        identity: tls.TlsFiles,
    ) -> None:
        # One channel per peer for the life of the process: a sale reuses its
        # connections (and their TLS sessions) instead of handshaking per call.
        self._channels = [
            tls.aio_channel(event_target, "event", identity),
            tls.aio_channel(payment_target, "payment", identity),
        ]
        self.events = event_pb2_grpc.EventServiceStub(self._channels[0])
        self.payments = payment_pb2_grpc.PaymentServiceStub(self._channels[1])
        self.timeout = timeout_seconds

    def call_options(self) -> dict[str, object]:
        return {"timeout": self.timeout, "metadata": (("x-request-id", request_id_var.get()),)}

    async def aclose(self) -> None:
        for channel in self._channels:
            await channel.close()

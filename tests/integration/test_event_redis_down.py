"""With Redis gone, LockSeat answers UNAVAILABLE at once and leaves nothing
half-held; when Redis returns, so does service."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
import redis

from runtime.status import error_details
from scripts.mesh import Mesh, free_port
from tests.faultproxy import FaultProxy
from tests.support import create_event_grpc
from ticketing.event.v1 import event_pb2, event_pb2_grpc

# What "at once" means here: a few of the client's 1 s socket timeouts (the
# script, and its retries), not the 10 s a caller would wait.
FAILS_WITHIN_SECONDS = 5.0


@pytest.fixture(scope="module")
def proxied(
    mesh: Mesh,
) -> Iterator[tuple[event_pb2_grpc.EventServiceStub, event_pb2_grpc.EventServiceStub, FaultProxy]]:
    """A second event service whose Redis connection runs through a fault proxy:
    its stub for a developer (CreateEvent), for booking (LockSeat), and the proxy."""
    proxy = FaultProxy(("127.0.0.1", 6379)).start()
    addr = f"127.0.0.1:{free_port()}"
    db = mesh.env["REDIS_URL"].rsplit("/", 1)[1]
    mesh.start_service(
        "event",
        name="event-via-proxy",
        env={"EVENT_GRPC_ADDR": addr, "REDIS_URL": f"redis://{proxy.address}/{db}"},
    )
    try:
        with (
            mesh.channel("event", addr=addr) as developer,
            mesh.channel("event", "booking", addr=addr) as booking,
        ):
            yield (
                event_pb2_grpc.EventServiceStub(developer),
                event_pb2_grpc.EventServiceStub(booking),
                proxy,
            )
    finally:
        mesh.stop("event-via-proxy")
        proxy.close()


def try_lock(
    stub: event_pb2_grpc.EventServiceStub, event: event_pb2.Event, owner: str
) -> grpc.StatusCode:
    try:
        stub.LockSeat(
            event_pb2.LockSeatRequest(
                event_id=event.event_id,
                seat_ids=["vip-1-1", "vip-1-2", "standard-1-1"],
                owner=owner,
            ),
            timeout=10,
        )
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        details = error_details(error)
        if details.code is grpc.StatusCode.UNAVAILABLE:
            assert details.reason == "HOLD_STORE_UNAVAILABLE"
        return details.code


@pytest.mark.parametrize("fault", ["cut", "blackhole"])
def test_lock_seat_fails_fast_and_whole_without_redis(mesh, proxied, organizer, fault) -> None:
    public, stub, proxy = proxied
    event = create_event_grpc(public, organizer)
    getattr(proxy, fault)()
    try:
        owner = str(uuid.uuid4())
        started = time.monotonic()
        # The answer is UNAVAILABLE, never a hang: the Redis client gives up on a
        # silent server after its 1 s timeouts (runtime.redis_client), well
        # inside the call's 10 s deadline.
        assert try_lock(stub, event, owner) is grpc.StatusCode.UNAVAILABLE
        elapsed = time.monotonic() - started
        assert elapsed < FAILS_WITHIN_SECONDS, f"took {elapsed:.1f}s to say Redis is away"
    finally:
        proxy.restore()
    store = redis.Redis.from_url(mesh.env["REDIS_URL"], decode_responses=True)
    held = [k for k in store.scan_iter(f"ev:{{{event.event_id}}}:hold:*") if store.get(k) == owner]
    store.close()
    assert held == [], "a failed LockSeat left holds behind"
    assert try_lock(stub, event, str(uuid.uuid4())) is grpc.StatusCode.OK

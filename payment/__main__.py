"""`python -m payment [serve|migrate]`."""

from __future__ import annotations

from payment.api import PaymentServicer
from payment.repository import Charges
from payment.service import PaymentUseCases
from runtime import cli, db
from runtime.config import Settings
from runtime.pg import Database
from runtime.server import GrpcService
from ticketing.payment.v1 import payment_pb2, payment_pb2_grpc


async def build(settings: Settings) -> GrpcService:
    engine = db.async_engine(settings)
    database = Database(settings.database_url, settings.db_pool_size)
    use_cases = PaymentUseCases(engine, Charges(database))
    service = GrpcService(settings)
    service.add(
        payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
        payment_pb2_grpc.add_PaymentServiceServicer_to_server,
        PaymentServicer(use_cases),
    )
    service.workers += [db.disposing(engine), database]
    return service


cli.main("payment", Settings, build)

"""gRPC entry point of the payment service: proto in, use case, proto out."""

from __future__ import annotations

import grpc

from payment.domain import Amount, CardDetails, ChargeOrder, Payment
from payment.service import PaymentUseCases
from runtime import timestamps
from runtime.identity import caller
from ticketing.common.v1 import money_pb2
from ticketing.payment.v1 import payment_pb2, payment_pb2_grpc


def payment_to_proto(payment: Payment) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id=str(payment.payment_id),
        user_id=str(payment.user_id),
        reference=payment.reference,
        amount=money_pb2.Money(currency_code=payment.currency, amount_minor=payment.amount_minor),
        state=payment.state.value,
        card_brand=payment.card_brand,
        card_last4=payment.card_last4,
        decline_code=payment.decline_code,
        refunded_amount=money_pb2.Money(
            currency_code=payment.currency, amount_minor=payment.refunded_minor
        ),
        create_time=timestamps.to_proto(payment.create_time),
        update_time=timestamps.to_proto(payment.update_time),
    )


def charge_order(request: payment_pb2.ChargeRequest) -> ChargeOrder:
    method = request.payment_method
    return ChargeOrder(
        idempotency_key=request.idempotency_key,
        user_id=request.user_id,
        amount=(
            Amount(request.amount.amount_minor, request.amount.currency_code)
            if request.HasField("amount")
            else None
        ),
        card=(
            CardDetails(method.card_number, method.exp_month, method.exp_year, method.cvc)
            if request.HasField("payment_method")
            else None
        ),
        reference=request.reference,
    )


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, use_cases: PaymentUseCases) -> None:
        self._payments = use_cases

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.Payment:
        return payment_to_proto(await self._payments.get(caller(), request.payment_id))

    async def Charge(
        self, request: payment_pb2.ChargeRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.Payment:
        return payment_to_proto(await self._payments.charge(charge_order(request)))

    async def Refund(
        self, request: payment_pb2.RefundRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.Payment:
        return payment_to_proto(
            await self._payments.refund(request.idempotency_key, request.payment_id)
        )

    async def LookupPayment(
        self, request: payment_pb2.LookupPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.Payment:
        return payment_to_proto(await self._payments.lookup(request.idempotency_key))

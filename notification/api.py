"""gRPC entry point of the notification service."""

from __future__ import annotations

import grpc

from notification.domain import Notification
from notification.service import NotificationUseCases
from runtime import timestamps
from runtime.identity import caller
from ticketing.notification.v1 import notification_pb2, notification_pb2_grpc


def notification_to_proto(notification: Notification) -> notification_pb2.Notification:
    return notification_pb2.Notification(
        notification_id=str(notification.notification_id),
        user_id=str(notification.user_id),
        kind=notification.kind.value,
        recipient=notification.recipient,
        subject=notification.subject,
        state=notification.state.value,
        attempts=notification.attempts,
        message_id=notification.message_id,
        create_time=timestamps.to_proto(notification.create_time),
        sent_time=timestamps.to_proto(notification.sent_time) if notification.sent_time else None,
        booking_id=notification.booking_id,
        event_id=notification.event_id,
    )


class NotificationServicer(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, use_cases: NotificationUseCases) -> None:
        self._notifications = use_cases

    async def ListNotifications(
        self,
        request: notification_pb2.ListNotificationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb2.ListNotificationsResponse:
        found, token = await self._notifications.list(
            caller(), request.page_size, request.page_token
        )
        return notification_pb2.ListNotificationsResponse(
            notifications=[notification_to_proto(n) for n in found], next_page_token=token
        )

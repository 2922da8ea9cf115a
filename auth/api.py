"""gRPC entry point of the auth service: proto in, use case, proto out."""

from __future__ import annotations

import grpc

from auth.domain import User
from auth.service import AuthUseCases, Tokens
from runtime import timestamps
from runtime.errors import bad_field
from runtime.identity import Role, caller
from runtime.signing import KeyRing
from ticketing.auth.v1 import auth_pb2, auth_pb2_grpc

_ROLE_TO_PROTO = {
    Role.USER: auth_pb2.ROLE_USER,
    Role.ORGANIZER: auth_pb2.ROLE_ORGANIZER,
    Role.ADMIN: auth_pb2.ROLE_ADMIN,
}
_ROLE_FROM_PROTO = {v: k for k, v in _ROLE_TO_PROTO.items()}


def user_to_proto(user: User) -> auth_pb2.User:
    return auth_pb2.User(
        user_id=str(user.user_id),
        email=user.email,
        display_name=user.display_name,
        role=_ROLE_TO_PROTO[user.role],
        create_time=timestamps.to_proto(user.create_time),
        email_verified=user.email_verified,
    )


def tokens_to_proto(tokens: Tokens) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        token_type="Bearer",
        expires_in=tokens.expires_in,
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, use_cases: AuthUseCases, keys: KeyRing) -> None:
        self._auth = use_cases
        self._keys = keys

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        user = await self._auth.register(request.email, request.password, request.display_name)
        return user_to_proto(user)

    async def Login(
        self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.TokenPair:
        return tokens_to_proto(await self._auth.login(request.email, request.password))

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.TokenPair:
        return tokens_to_proto(await self._auth.refresh(request.refresh_token))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.LogoutResponse:
        await self._auth.logout(request.refresh_token)
        return auth_pb2.LogoutResponse()

    async def VerifyEmail(
        self, request: auth_pb2.VerifyEmailRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        return user_to_proto(await self._auth.verify_email(request.email, request.code))

    async def ResendVerification(
        self, request: auth_pb2.ResendVerificationRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ResendVerificationResponse:
        await self._auth.resend_verification(request.email)
        return auth_pb2.ResendVerificationResponse()

    async def RequestPasswordReset(
        self, request: auth_pb2.RequestPasswordResetRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RequestPasswordResetResponse:
        await self._auth.request_password_reset(request.email)
        return auth_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: auth_pb2.ResetPasswordRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ResetPasswordResponse:
        await self._auth.reset_password(request.email, request.code, request.new_password)
        return auth_pb2.ResetPasswordResponse()

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ChangePasswordResponse:
        await self._auth.change_password(
            caller().user_id, request.current_password, request.new_password
        )
        return auth_pb2.ChangePasswordResponse()

    async def DeleteMe(
        self, request: auth_pb2.DeleteMeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.DeleteMeResponse:
        await self._auth.delete_account(caller().user_id, request.current_password)
        return auth_pb2.DeleteMeResponse()

    async def GetMe(
        self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        return user_to_proto(await self._auth.get_user(caller().user_id))

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.JwkSet:
        return auth_pb2.JwkSet(keys=[auth_pb2.Jwk(**jwk) for jwk in self._keys.jwks()])

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListUsersResponse:
        users, next_token = await self._auth.list_users(request.page_size, request.page_token)
        return auth_pb2.ListUsersResponse(
            users=[user_to_proto(u) for u in users], next_page_token=next_token
        )

    async def SetUserRole(
        self, request: auth_pb2.SetUserRoleRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.User:
        if request.role not in _ROLE_FROM_PROTO:
            raise bad_field("role", "must be ROLE_USER, ROLE_ORGANIZER or ROLE_ADMIN")
        user = await self._auth.set_role(request.user_id, _ROLE_FROM_PROTO[request.role])
        return user_to_proto(user)

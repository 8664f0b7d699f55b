"""The operator's routes, behind the admin token: reload the repository, and each model's rollout controls
(promote, roll back, pin, unpin, canary share; rules in rollout_control.py, docs/service.md "Rollouts")."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Header, Request

from .errors import Forbidden, Unauthorized
from .schemas import ADMIN_RESPONSES, CanaryShare, PromoteRequest, RolloutResponse, VersionChoice
from .state import ServiceState


def service(request: Request) -> ServiceState:
    return request.app.state.service


def require_admin(request: Request, authorization: str | None = Header(None)) -> None:
    token = service(request).settings.admin_token
    if not token:
        return
    if not authorization:
        raise Unauthorized("send Authorization: Bearer TOKEN", headers={"WWW-Authenticate": "Bearer"})
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Forbidden("invalid admin token")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=ADMIN_RESPONSES)


@router.post("/reload", summary="Load new versions from the repository now (each gated as on a poll)")
async def reload(request: Request) -> dict:
    return {"results": await service(request).rollouts.refresh()}


def _answer(state: ServiceState, name: str, result: str) -> dict:
    return {"result": result, "model": state.models.describe_model(name)}


@router.post("/models/{name}/promote", response_model=RolloutResponse, summary="Serve a version now (past gate and canary)")
async def promote(request: Request, name: str, choice: PromoteRequest) -> dict:
    state = service(request)
    return _answer(state, name, await state.rollouts.promote(name, choice.version))


@router.post("/models/{name}/rollback", response_model=RolloutResponse, summary="End the canary, or serve the previous version")
async def rollback(request: Request, name: str) -> dict:
    state = service(request)
    return _answer(state, name, await state.rollouts.rollback(name))


@router.post("/models/{name}/pin", response_model=RolloutResponse, summary="Keep a version serving; newer ones are only gated")
async def pin(request: Request, name: str, choice: VersionChoice | None = None) -> dict:
    state = service(request)
    return _answer(state, name, await state.rollouts.pin(name, choice.version if choice else None))


@router.post("/models/{name}/unpin", response_model=RolloutResponse, summary="Release the pin; the newest version is gated now")
async def unpin(request: Request, name: str) -> dict:
    state = service(request)
    return _answer(state, name, await state.rollouts.unpin(name))


@router.put("/models/{name}/canary", response_model=RolloutResponse, summary="The share the next gated version takes first")
async def canary(request: Request, name: str, share: CanaryShare) -> dict:
    state = service(request)
    return _answer(state, name, await state.rollouts.set_canary(name, share.percent))

"""Dependencies shared by the routes (`Annotated` aliases, FastAPI style)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from pydantic import SecretStr

from api.serving import MicroBatcher, ServedModel
from core.pipeline import Workspace
from core.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_workspace(request: Request) -> Workspace:
    return request.app.state.workspace


def get_served(request: Request) -> ServedModel:
    return request.app.state.served


def get_batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]
ServedDep = Annotated[ServedModel, Depends(get_served)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]


def key_matches(given: str, keys: list[SecretStr]) -> bool:
    """Whether `given` is one of `keys`, compared in constant time against every key (bytes: a header may hold
    non-ASCII characters, which `compare_digest` refuses in a str)."""
    given_bytes = given.encode()
    matched = False
    for key in keys:
        matched |= secrets.compare_digest(given_bytes, key.get_secret_value().encode())
    return matched


def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="Required when the server has API keys configured.")] = None,
) -> None:
    """Accept the request when no keys are configured or `X-API-Key` matches one of them."""
    if not settings.api_keys:
        return
    if x_api_key is None or not key_matches(x_api_key, settings.api_keys):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )


ApiKeyDep = Depends(require_api_key)

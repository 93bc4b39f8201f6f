"""A minimal AI server laid out as today's services are: a package, pyproject.toml + uv.lock, extra .env keys.

Configuration comes from ``.env`` in the app directory (the parent of this package), templated by the ``ai_server``
role: the runbook's keys plus ``ai_server_env_extra`` / ``ai_server_env_extra_secret``. This app reads two extras:
``APP_GREETING`` (plain) and ``APP_SIGNING_KEY`` (a secret; never returned, only whether it is set).

Routes
- ``GET /health``: 200 while the process runs; ``status`` is ``ok`` when vLLM's /health answers 200, else
  ``degraded``; ``greeting`` is APP_GREETING and ``signing_key_set`` whether APP_SIGNING_KEY is non-empty.
- ``GET /ready``: 200 when vLLM's /health answers 200, else 503.

Like the reference app (examples/ai-server) it has no authentication of its own: the role keeps it on loopback
behind its authenticating proxy.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from dotenv import load_dotenv
from fastapi import FastAPI
from fastapi.responses import JSONResponse

APP_DIR = Path(__file__).resolve().parent.parent
load_dotenv(APP_DIR / ".env")

APP_ENV = os.environ.get("APP_ENV", "development")
VLLM_BASE_URL = os.environ.get("VLLM_BASE_URL", "http://localhost:8001/v1").rstrip("/")
VLLM_ROOT_URL = VLLM_BASE_URL[: -len("/v1")] if VLLM_BASE_URL.endswith("/v1") else VLLM_BASE_URL
GREETING = os.environ.get("APP_GREETING", "")
SIGNING_KEY_SET = bool(os.environ.get("APP_SIGNING_KEY"))


@asynccontextmanager
async def _lifespan(application: FastAPI):
    """One HTTP client for the process, as in examples/ai-server (a client per request costs ~20 ms of CPU)."""
    application.state.vllm = httpx.AsyncClient(timeout=2.0, limits=httpx.Limits(keepalive_expiry=1.0))
    try:
        yield
    finally:
        await application.state.vllm.aclose()


app = FastAPI(title="AI server (uv project)", docs_url=None if APP_ENV == "production" else "/docs", redoc_url=None,
              lifespan=_lifespan)


async def _vllm_ok() -> bool:
    try:
        return (await app.state.vllm.get(f"{VLLM_ROOT_URL}/health")).status_code == 200
    except httpx.HTTPError:
        return False


@app.get("/health")
async def health() -> dict:
    return {"status": "ok" if await _vllm_ok() else "degraded", "app_env": APP_ENV, "greeting": GREETING,
            "signing_key_set": SIGNING_KEY_SET}


@app.get("/ready")
async def ready() -> JSONResponse:
    ok = await _vllm_ok()
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

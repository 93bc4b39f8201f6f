"""Reference AI server for llmops.gce_vllm: a small FastAPI app in front of vLLM.

Configuration comes from ``.env`` beside this file (templated by the ``ai_server`` role):
APP_ENV, VLLM_BASE_URL (ends in /v1), VLLM_API_KEY, VLLM_MODEL, VLLM_LORA_ADAPTER_EASYCONTRACT,
VLLM_LORA_ADAPTER_CHECKLIST, BACKEND_CALLBACK_BASE_URL (no /v1), BACKEND_INTERNAL_TOKEN, HTTP_TIMEOUT_SEC.

Routes
- ``GET /health``: liveness, always 200 while the process runs; reports whether vLLM's /health answers
  (``status`` is ``ok`` when it does, ``degraded`` when it does not).
- ``GET /ready``: readiness, 200 only when vLLM's /health answers 200, else 503.
- ``POST /v1/chat``: ``{"task": "easycontract"|"checklist"|null, "messages": [...], ...}`` forwarded to
  vLLM's /v1/chat/completions with the base model or the task's LoRA adapter.
- ``PUT /files/{name}`` / ``GET /files/{name}``: store and read a file under resources/s3.
- ``GET /metrics``: Prometheus' text format (prometheus_client): ``ai_server_chat_requests_total`` by ``model`` (the
  base model or the LoRA adapter the request went to; ``none`` when it named no valid task) and ``status`` (the
  HTTP status this app answered), ``ai_server_chat_request_duration_seconds`` (a histogram) by ``model``, and the
  client library's own ``process_*`` and ``python_*`` series (each model's statuses 200, 500 and 502 exist at 0
  from the start). vLLM counts every request under the base model's name, so this is the only per-adapter request
  count.

No route authenticates its caller: the ``ai_server`` role runs uvicorn on loopback and puts an authenticating
proxy (HAProxy) on the public port that requires ``Authorization: Bearer <ai_server_api_key>`` on every route but
/health and /ready (/metrics too: the prometheus role scrapes it with that key). Never expose this app directly.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from dotenv import load_dotenv
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

APP_DIR = Path(__file__).resolve().parent
load_dotenv(APP_DIR / ".env")

APP_ENV = os.environ.get("APP_ENV", "development")
VLLM_BASE_URL = os.environ.get("VLLM_BASE_URL", "http://localhost:8001/v1").rstrip("/")
VLLM_API_KEY = os.environ.get("VLLM_API_KEY", "")
VLLM_MODEL = os.environ.get("VLLM_MODEL", "")
ADAPTERS = {
    "easycontract": os.environ.get("VLLM_LORA_ADAPTER_EASYCONTRACT", "easycontract"),
    "checklist": os.environ.get("VLLM_LORA_ADAPTER_CHECKLIST", "checklist"),
}
BACKEND_CALLBACK_BASE_URL = os.environ.get("BACKEND_CALLBACK_BASE_URL", "").rstrip("/")
HTTP_TIMEOUT_SEC = float(os.environ.get("HTTP_TIMEOUT_SEC", "30"))
STORAGE_DIR = APP_DIR / "resources" / "s3"
# vLLM's /health is served at the root, not under /v1
VLLM_ROOT_URL = VLLM_BASE_URL[: -len("/v1")] if VLLM_BASE_URL.endswith("/v1") else VLLM_BASE_URL
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

# The model label of a chat request that named no valid task (never the caller's own text: a label per value)
NO_MODEL = "none"
CHAT_REQUESTS = Counter(
    "ai_server_chat_requests",
    "Chat requests (POST /v1/chat) answered, by the model they went to (the base model or a LoRA adapter) and the "
    "HTTP status this app answered.",
    ["model", "status"],
)
CHAT_SECONDS = Histogram(
    "ai_server_chat_request_duration_seconds",
    "Seconds from a chat request's arrival to this app's answer (vLLM's time included), by model.",
    ["model"],
    # a chat takes seconds; HTTP_TIMEOUT_SEC (30 by default) bounds it
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, float("inf")),
)
# Every model's series exist from the start, at 0: a rate() sees the first request as an increase (a series first
# scraped at 1 would hide it), and the error ratio counts the first 5xx
for _model in [VLLM_MODEL, *ADAPTERS.values()]:
    CHAT_SECONDS.labels(_model)
    for _status in ("200", "500", "502"):
        CHAT_REQUESTS.labels(_model, _status)


@asynccontextmanager
async def _lifespan(application: FastAPI):
    """One HTTP client to vLLM for the process: its connections are reused. A client per request builds a new TLS
    context each time (about 20 ms of CPU with httpx 0.28, more than the rest of a request here); idle connections
    close after 1 s, before vLLM's own keep-alive timeout (uvicorn's 5 s) can close one under a request."""
    application.state.vllm = httpx.AsyncClient(timeout=HTTP_TIMEOUT_SEC, limits=httpx.Limits(keepalive_expiry=1.0))
    try:
        yield
    finally:
        await application.state.vllm.aclose()


app = FastAPI(title="AI server", docs_url=None if APP_ENV == "production" else "/docs", redoc_url=None,
              lifespan=_lifespan)


async def _vllm_health() -> dict:
    try:
        resp = await app.state.vllm.get(f"{VLLM_ROOT_URL}/health", timeout=2.0)
        return {"reachable": resp.status_code == 200, "status_code": resp.status_code}
    except httpx.HTTPError as exc:
        return {"reachable": False, "error": type(exc).__name__}


@app.get("/health")
async def health() -> dict:
    vllm = await _vllm_health()
    return {
        "status": "ok" if vllm["reachable"] else "degraded",
        "app_env": APP_ENV,
        "vllm": vllm,
        "storage_ready": STORAGE_DIR.is_dir(),
    }


@app.get("/ready")
async def ready() -> JSONResponse:
    vllm = await _vllm_health()
    return JSONResponse({"ready": vllm["reachable"], "vllm": vllm}, status_code=200 if vllm["reachable"] else 503)


@app.post("/v1/chat")
async def chat(request: Request) -> JSONResponse:
    started = time.monotonic()
    target = {"model": NO_MODEL}
    status = 500   # an exception that is no HTTPException: Starlette answers 500
    try:
        resp = await _chat(request, target)
        status = resp.status_code
        return resp
    except HTTPException as exc:
        status = exc.status_code
        raise
    finally:
        CHAT_REQUESTS.labels(target["model"], str(status)).inc()
        CHAT_SECONDS.labels(target["model"]).observe(time.monotonic() - started)


async def _chat(request: Request, target: dict) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError as exc:
        raise HTTPException(status_code=422, detail="body must be JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise HTTPException(status_code=422, detail="body must be an object with a 'messages' list")
    task = body.pop("task", None)
    if task is not None and task not in ADAPTERS:
        raise HTTPException(status_code=422, detail=f"unknown task {task!r}; one of {sorted(ADAPTERS)}")
    body["model"] = target["model"] = ADAPTERS[task] if task else VLLM_MODEL
    try:
        resp = await request.app.state.vllm.post(
            f"{VLLM_BASE_URL}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {VLLM_API_KEY}"},
        )
    except httpx.HTTPError as exc:
        raise HTTPException(status_code=502, detail=f"vLLM unreachable: {type(exc).__name__}") from exc
    try:
        answer = resp.json()
    except json.JSONDecodeError as exc:
        # a proxy's or a starting server's page, not vLLM's answer
        raise HTTPException(status_code=502, detail=f"vLLM answered HTTP {resp.status_code} without JSON") from exc
    return JSONResponse(answer, status_code=resp.status_code)


@app.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _storage_path(name: str) -> Path:
    if not SAFE_NAME.match(name) or name in (".", ".."):
        raise HTTPException(status_code=422, detail="file name must match [A-Za-z0-9._-]{1,128}")
    return STORAGE_DIR / name


@app.put("/files/{name}")
async def put_file(name: str, request: Request) -> dict:
    path = _storage_path(name)
    data = await request.body()
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return {"name": name, "bytes": len(data)}


@app.get("/files/{name}")
async def get_file(name: str) -> Response:
    path = _storage_path(name)
    if not path.is_file():
        raise HTTPException(status_code=404, detail="not found")
    return Response(path.read_bytes(), media_type="application/octet-stream")

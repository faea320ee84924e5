"""``dmask-live serve``: the masked teleconsult web server (aiohttp signalling + aiortc media).

Routes (tokens are the secrets in the two links of a consult; anything wrong is a 403)::

    GET  /                        start page (creates consults with the start key)
    POST /api/consults            create a consult  → {"patient_url", "clinician_url", ...}
    GET  /patient/{token}         patient page
    GET  /clinician/{token}       clinician page
    POST /api/offer/{token}       {"type": "offer", "sdp": ...} → answer (non-trickle)
    POST /api/end/{token}         the clinician ends the consult

Errors are short JSON bodies: 400 bad request/SDP, 403 wrong or expired token, 413 body too
large, 429 too many consults. Access logs never contain tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import secrets
import ssl
from collections.abc import Callable
from pathlib import Path

import numpy as np
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiortc import RTCIceServer, RTCSessionDescription

import dmask_live
from dmask_live.consults import (
    CLINICIAN,
    PATIENT,
    ConsultLimits,
    ConsultRegistry,
    OfferError,
    TooManyConsultsError,
)
from dmask_live.relay import Masker, NeutralMasker

logger = logging.getLogger(__name__)

WEB_DIR = Path(dmask_live.__file__).resolve().parents[1] / "web"
MAX_OFFER_BYTES = 64 * 1024
MAX_SMALL_BODY_BYTES = 1024
REGISTRY_KEY = web.AppKey("registry", ConsultRegistry)
START_KEY = web.AppKey("start_key", str)
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",  # the page URL holds the token
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'"
    ),
    "Permissions-Policy": "camera=(self), microphone=(self)",
}


MASK_IN = ("process", "thread")


def default_mask_in() -> str:
    """Where each consult's pipeline runs: its own process where frames can be shared unnamed."""
    from dmask_live import mask_process

    return "process" if mask_process.available() else "thread"


def pipeline_masker_factory(mask_in: str = "thread", **pipeline_kwargs) -> Callable[[], Masker]:
    """Factory of the real masking pipeline, one per consult: ``mask_in="process"`` runs it in a
    process of its own (``ProcessMasker``: no GIL shared with the event loop or other consults),
    ``"thread"`` on a worker thread of this process (``PipelineWorker``)."""
    if mask_in not in MASK_IN:
        raise ValueError(f"mask_in must be one of {MASK_IN}, got {mask_in!r}")
    if mask_in == "process":
        from dmask_live.mask_process import ProcessMasker as make_masker
    else:
        from dmask_live.pipeline import PipelineWorker as make_masker

    def make() -> Masker:
        return make_masker(**pipeline_kwargs)

    return make


async def check_pipeline(mask_in: str = "thread", **pipeline_kwargs) -> None:
    """Build one pipeline the way consults will and mask a bundled sample face (scikit-image's
    astronaut), so a missing model or GL fails at startup and JIT compilation happens (and is
    cached) before the first consult."""
    import cv2
    from skimage import data

    face = cv2.resize(np.ascontiguousarray(data.astronaut()), (640, 480))
    masker = pipeline_masker_factory(mask_in, **pipeline_kwargs)()
    try:
        await masker.start()
        for index in range(3):
            await masker.process(face, index / 30.0)
    finally:
        await masker.close()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=SECURITY_HEADERS)


def _forbidden() -> web.Response:
    return _error(403, "forbidden")


async def _read_json(request: web.Request, limit: int) -> dict | web.Response:
    """The JSON object body, or an error response (413 oversized, 400 malformed)."""
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"body larger than {limit} bytes")
    body = bytearray()
    while chunk := await request.content.read(16384):
        body += chunk
        if len(body) > limit:
            return _error(413, f"body larger than {limit} bytes")
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _error(400, "body is not JSON")
    return data if isinstance(data, dict) else _error(400, "body must be a JSON object")


def _lookup(request: web.Request, role: str | None = None):
    entry = request.app[REGISTRY_KEY].find(request.match_info["token"])
    if entry is None or (role is not None and entry[1] != role):
        return None
    return entry


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / name, headers=SECURITY_HEADERS)


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def index(request: web.Request) -> web.StreamResponse:
    return _page("index.html")


async def patient_page(request: web.Request) -> web.StreamResponse:
    return _page("patient.html") if _lookup(request, PATIENT) else _forbidden()


async def clinician_page(request: web.Request) -> web.StreamResponse:
    return _page("clinician.html") if _lookup(request, CLINICIAN) else _forbidden()


async def create_consult(request: web.Request) -> web.Response:
    start_key = request.app[START_KEY]
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if start_key and not hmac.compare_digest(given.encode(), start_key.encode()):
        return _forbidden()
    body = await _read_json(request, MAX_SMALL_BODY_BYTES)
    if isinstance(body, web.Response):
        return body
    registry = request.app[REGISTRY_KEY]
    try:
        consult = registry.create()
    except TooManyConsultsError as exc:
        return _error(429, str(exc))
    payload = {
        "consult": consult.id,
        "patient_url": f"/patient/{consult.tokens[PATIENT]}",
        "clinician_url": f"/clinician/{consult.tokens[CLINICIAN]}",
        "max_duration_s": registry.limits.max_duration_s,
        "idle_timeout_s": registry.limits.idle_timeout_s,
    }
    return web.json_response(payload, status=201, headers=SECURITY_HEADERS)


async def offer(request: web.Request) -> web.Response:
    entry = _lookup(request)
    if entry is None:
        return _forbidden()
    consult, role = entry
    body = await _read_json(request, MAX_OFFER_BYTES)
    if isinstance(body, web.Response):
        return body
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer" or not isinstance(sdp, str) or not sdp.startswith("v=0"):
        return _error(400, 'expected {"type": "offer", "sdp": "v=0..."}')
    try:
        answer = await consult.answer(role, RTCSessionDescription(sdp=sdp, type="offer"))
    except OfferError as exc:
        return _error(400, str(exc))
    return web.json_response({"type": answer.type, "sdp": answer.sdp}, headers=SECURITY_HEADERS)


async def end_consult(request: web.Request) -> web.Response:
    entry = _lookup(request, CLINICIAN)
    if entry is None:
        return _forbidden()
    await request.app[REGISTRY_KEY].end(entry[0], "ended by the clinician")
    return web.json_response({"ended": True}, headers=SECURITY_HEADERS)


class RedactingAccessLogger(AbstractAccessLogger):
    """Access log without the path's secrets: method, route, status, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = getattr(getattr(request, "match_info", None), "route", None)
        resource = getattr(route, "resource", None)
        path = resource.canonical if resource is not None else "?"
        self.logger.info("%s %s %s %.1fms", request.method, path, response.status, time * 1000)


def create_app(
    masker_factory: Callable[[], Masker],
    *,
    limits: ConsultLimits | None = None,
    ice_servers: list[RTCIceServer] | None = None,
    start_key: str = "",
) -> web.Application:
    """The aiohttp application; ``start_key`` empty means anyone reaching it may create consults."""
    app = web.Application(client_max_size=MAX_OFFER_BYTES * 2)
    registry = ConsultRegistry(masker_factory, limits, ice_servers)
    app[REGISTRY_KEY] = registry
    app[START_KEY] = start_key
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", no_content)
    app.router.add_post("/api/consults", create_consult)
    app.router.add_get("/patient/{token}", patient_page)
    app.router.add_get("/clinician/{token}", clinician_page)
    app.router.add_post("/api/offer/{token}", offer)
    app.router.add_post("/api/end/{token}", end_consult)
    app.router.add_static("/static", WEB_DIR / "static")

    async def on_startup(app: web.Application) -> None:
        registry.start()

    async def on_shutdown(app: web.Application) -> None:
        await registry.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


# ----------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--cert", help="TLS certificate (PEM) for HTTPS; browsers need HTTPS off localhost")
    parser.add_argument("--key", help="TLS private key (PEM) for --cert")
    parser.add_argument("--max-consults", type=int, default=ConsultLimits.max_consults)
    parser.add_argument("--idle-timeout", type=float, default=ConsultLimits.idle_timeout_s, help="seconds")
    parser.add_argument("--max-duration", type=float, default=ConsultLimits.max_duration_s, help="seconds")
    parser.add_argument("--stun", action="append", default=[], help="STUN URL (repeatable; none by default)")
    parser.add_argument(
        "--masker", choices=("pipeline", "neutral"), default="pipeline",
        help="pipeline: the avatar (default); neutral: flat frames only (for testing the relay)",
    )
    parser.add_argument("--threads", type=int, default=1, help="landmark network threads per consult")
    parser.add_argument(
        "--mask-in", choices=MASK_IN, default=None,
        help="run each consult's pipeline in its own process (default on Linux) or in a thread",
    )
    parser.add_argument("--no-start-key", action="store_true", help="let anyone reaching / create consults")


def limit_blas_threads() -> None:
    """One BLAS thread: the tracker's small solves otherwise spin OpenBLAS threads that, on a busy
    2-core machine, made a 1 ms tracker step take 150+ ms (measured). Effective only if set before
    SciPy's OpenBLAS loads, i.e. before the first pipeline is built."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def run(args: argparse.Namespace) -> int:
    limit_blas_threads()
    if bool(args.cert) != bool(args.key):
        logger.error("--cert and --key go together")
        return 2
    ssl_context = None
    if args.cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.cert, args.key)
    if args.masker == "pipeline":
        mask_in = args.mask_in or default_mask_in()
        try:
            asyncio.run(check_pipeline(mask_in, threads=args.threads))
            masker_factory = pipeline_masker_factory(mask_in, threads=args.threads)
        except Exception as exc:  # noqa: BLE001 - report any reason the pipeline cannot run
            logger.error(
                "masking pipeline unavailable (%s: %s); --masker neutral serves flat frames (relay test)",
                type(exc).__name__, exc,
            )
            return 1
    else:
        masker_factory = NeutralMasker
    start_key = "" if args.no_start_key else secrets.token_urlsafe(24)
    limits = ConsultLimits(
        max_consults=args.max_consults, idle_timeout_s=args.idle_timeout, max_duration_s=args.max_duration
    )
    ice = [RTCIceServer(urls=url) for url in args.stun]
    app = create_app(masker_factory, limits=limits, ice_servers=ice, start_key=start_key)
    scheme = "https" if ssl_context else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"{scheme}://{host}:{args.port}/" + (f"#key={start_key}" if start_key else "")
    print(f"dmask-live: clinician start page {url}", flush=True)
    web.run_app(
        app, host=args.host, port=args.port, ssl_context=ssl_context, print=None,
        access_log_class=RedactingAccessLogger,
    )
    return 0

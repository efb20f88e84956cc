"""A local OpenAI Batch API: dry-run a batch job against your own model before paying for it.

``autodemo emulate-batch-api --upstream http://127.0.0.1:8080/v1 --port 8090`` serves

- ``POST /v1/files`` (multipart upload), ``GET /v1/files``, ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``;
- ``POST /v1/batches``, ``GET /v1/batches`` (newest first, ``limit``/``after``),
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``;
- ``POST /v1/chat/completions`` and ``GET /v1/models``, passed through to the upstream
  server (streaming included), so one base URL serves online and batch calls alike;

and executes each batch's requests against the upstream OpenAI-compatible chat server
(a local llama.cpp server, or anything else), ``--concurrency`` at a time. Batches go
``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed`` and write an output
file (requests answered with HTTP 2xx) and an error file (the others, with their status
and body, or an ``error`` object when the request never ran), in the line format of
OpenAI's Batch API. Input files are validated as OpenAI does (JSON lines, unique
``custom_id``, ``method``, ``url``, one model per batch, the per-file limits); a file that
breaks a rule makes the batch ``failed`` with the offending line in ``errors``.

``--expire-after SECONDS`` emulates the completion window: a request not started by then
is not run, and the batch ends ``expired`` with those requests in the error file
(``batch_expired``), as a real batch past its 24 hours. ``cancel`` lets running requests
finish and ends ``cancelled`` (the rest: ``batch_cancelled``). State lives in memory.
"""

# No "from __future__ import annotations": FastAPI reads the route annotations at
# definition time, and they name classes imported inside _build_app.
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

__all__ = ["BatchApiEmulator", "emulate_batch_api", "running_emulator"]

_ENDPOINTS = ("/v1/chat/completions",)
_TERMINAL = {"completed", "failed", "expired", "cancelled"}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclass
class _File:
    meta: dict[str, Any]
    content: bytes


@dataclass
class _Batch:
    record: dict[str, Any]
    deadline: float
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class BatchApiEmulator:
    """The emulator's state and its FastAPI app (``.app``).

    Args:
        upstream: base URL of the OpenAI-compatible chat server (``.../v1``).
        upstream_api_key: sent to the upstream as ``Authorization: Bearer ...``.
        concurrency: requests in flight at once, over all batches (1 for llama.cpp).
        expire_after: seconds after which a batch expires (default: 24 hours).
        max_requests_per_file, max_bytes_per_file: the input-file limits (OpenAI's
            50,000 requests and 200 MB by default).
        request_timeout: seconds one upstream request may take.
    """

    def __init__(
        self,
        upstream: str,
        *,
        upstream_api_key: str | None = None,
        concurrency: int = 1,
        expire_after: float | None = None,
        max_requests_per_file: int = 50_000,
        max_bytes_per_file: int = 200 * 1024 * 1024,
        request_timeout: float = 900.0,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_api_key = upstream_api_key
        self.concurrency = concurrency
        self.expire_after = expire_after if expire_after is not None else 24 * 3600.0
        self.max_requests_per_file = max_requests_per_file
        self.max_bytes_per_file = max_bytes_per_file
        self.request_timeout = request_timeout
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self._limit: asyncio.Semaphore | None = None
        self._client: Any = None
        self.app = self._build_app()

    # -- the HTTP API ---------------------------------------------------------------

    def _build_app(self) -> Any:
        import httpx
        from fastapi import FastAPI, File, Form, Request, UploadFile
        from fastapi.responses import JSONResponse, Response, StreamingResponse
        from starlette.background import BackgroundTask

        @asynccontextmanager
        async def lifespan(_: Any) -> AsyncIterator[None]:
            self._limit = asyncio.Semaphore(self.concurrency)
            self._client = httpx.AsyncClient(timeout=self.request_timeout)
            try:
                yield
            finally:
                for batch in self.batches.values():
                    if batch.task is not None:
                        batch.task.cancel()
                await self._client.aclose()

        app = FastAPI(title="autodemo Batch API emulator", lifespan=lifespan)

        def error(status: int, message: str, param: str | None = None) -> JSONResponse:
            body = {"message": message, "type": "invalid_request_error", "param": param,
                    "code": None}  # fmt: skip
            return JSONResponse({"error": body}, status_code=status)

        @app.post("/v1/files")
        async def create_file(
            file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
        ) -> Any:
            if purpose != "batch":
                return error(400, f"this emulator stores batch input files only, not {purpose!r}",
                             "purpose")  # fmt: skip
            content = await file.read()
            if len(content) > self.max_bytes_per_file:
                return error(400, f"file is {len(content)} bytes; the limit for batch files "
                             f"is {self.max_bytes_per_file}", "file")  # fmt: skip
            return self._store(file.filename or "upload.jsonl", "batch", content)

        @app.get("/v1/files")
        async def list_files() -> Any:
            data = [f.meta for f in reversed(self.files.values())]
            return {"object": "list", "data": data, "has_more": False}

        @app.get("/v1/files/{file_id}")
        async def get_file(file_id: str) -> Any:
            stored = self.files.get(file_id)
            return stored.meta if stored else error(404, f"No such File object: {file_id}", "id")

        @app.get("/v1/files/{file_id}/content")
        async def file_content(file_id: str) -> Any:
            stored = self.files.get(file_id)
            if stored is None:
                return error(404, f"No such File object: {file_id}", "id")
            return Response(stored.content, media_type="application/octet-stream")

        @app.delete("/v1/files/{file_id}")
        async def delete_file(file_id: str) -> Any:
            if self.files.pop(file_id, None) is None:
                return error(404, f"No such File object: {file_id}", "id")
            return {"id": file_id, "object": "file", "deleted": True}

        @app.post("/v1/batches")
        async def create_batch(request: Request) -> Any:
            try:
                params = await request.json()
            except ValueError:
                return error(400, "the request body is not JSON")
            if not isinstance(params, dict):
                return error(400, "the request body must be a JSON object")
            file_id = params.get("input_file_id")
            stored = self.files.get(file_id) if isinstance(file_id, str) else None
            if stored is None or not isinstance(file_id, str):
                return error(404, f"No such File object: {file_id}", "input_file_id")
            if stored.meta["purpose"] != "batch":
                return error(400, "the input file must have purpose 'batch'", "input_file_id")
            endpoint = params.get("endpoint")
            if endpoint not in _ENDPOINTS:
                return error(400, f"this emulator supports endpoint {_ENDPOINTS[0]} only, "
                             f"not {endpoint!r}", "endpoint")  # fmt: skip
            if params.get("completion_window") != "24h":
                return error(400, "completion_window must be '24h'", "completion_window")
            metadata = params.get("metadata")
            if metadata is not None and not (
                isinstance(metadata, dict)
                and len(metadata) <= 16
                and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
            ):
                return error(400, "metadata: at most 16 string keys with string values",
                             "metadata")  # fmt: skip
            return self._create_batch(file_id, endpoint, metadata)

        @app.get("/v1/batches")
        async def list_batches(limit: int = 20, after: str | None = None) -> Any:
            ordered = [b.record for b in reversed(self.batches.values())]
            if after is not None:
                ids = [b["id"] for b in ordered]
                ordered = ordered[ids.index(after) + 1 :] if after in ids else []
            page = ordered[: max(1, min(limit, 100))]
            return {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(ordered) > len(page),
            }

        @app.get("/v1/batches/{batch_id}")
        async def get_batch(batch_id: str) -> Any:
            batch = self.batches.get(batch_id)
            return batch.record if batch else error(404, f"No such Batch object: {batch_id}", "id")

        @app.post("/v1/batches/{batch_id}/cancel")
        async def cancel_batch(batch_id: str) -> Any:
            batch = self.batches.get(batch_id)
            if batch is None:
                return error(404, f"No such Batch object: {batch_id}", "id")
            status = batch.record["status"]
            if status in ("completed", "failed", "expired"):
                return error(409, f"Cannot cancel a batch with status '{status}'.")
            if status not in ("cancelling", "cancelled"):
                batch.record.update(status="cancelling", cancelling_at=int(time.time()))
                batch.cancel.set()
            return batch.record

        @app.get("/v1/models")
        async def models() -> Any:
            response = await self._client.get(f"{self.upstream}/models", headers=self._headers())
            return Response(response.content, status_code=response.status_code,
                            media_type=response.headers.get("content-type"))  # fmt: skip

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            upstream = self._client.build_request(
                "POST", f"{self.upstream}/chat/completions", content=await request.body(),
                headers={**self._headers(), "content-type": "application/json"},
            )  # fmt: skip
            response = await self._client.send(upstream, stream=True)
            return StreamingResponse(
                response.aiter_raw(),
                status_code=response.status_code,
                media_type=response.headers.get("content-type"),
                background=BackgroundTask(response.aclose),
            )

        return app

    # -- files and batches ------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        key = self.upstream_api_key
        return {"authorization": f"Bearer {key}"} if key else {}

    def _store(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = _new_id("file")
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[file_id] = _File(meta, content)
        return meta

    def _create_batch(
        self, file_id: str, endpoint: str, metadata: dict[str, str] | None
    ) -> dict[str, Any]:
        now = time.time()
        batch_id = _new_id("batch")
        record: dict[str, Any] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(now),
            "in_progress_at": None,
            "expires_at": int(now + self.expire_after),
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata,
            "model": None,
        }
        batch = _Batch(record, deadline=now + self.expire_after)
        self.batches[batch_id] = batch
        batch.task = asyncio.get_running_loop().create_task(self._run(batch))
        return record

    def _validate(self, content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[Any]]:
        requests: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        lines = [line for line in content.splitlines() if line.strip()]
        if len(lines) > self.max_requests_per_file:
            errors.append({"code": "too_many_requests", "line": None, "param": None,
                           "message": f"the file has {len(lines)} requests; the limit is "
                                      f"{self.max_requests_per_file} per batch"})  # fmt: skip
            return [], errors
        for number, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            problem = None
            if not isinstance(item, dict):
                problem = ("invalid_json_line", "the line is not a JSON object")
            elif not isinstance(item.get("custom_id"), str) or not item["custom_id"]:
                problem = ("missing_required_parameter", "custom_id is missing")
            elif item["custom_id"] in seen:
                problem = ("duplicate_custom_id", f"custom_id {item['custom_id']!r} is repeated")
            elif item.get("method") != "POST":
                problem = ("invalid_method", "method must be POST")
            elif item.get("url") != endpoint:
                problem = ("mismatched_endpoint", f"url must be the batch's endpoint {endpoint}")
            elif not isinstance(item.get("body"), dict):
                problem = ("invalid_request", "body must be a JSON object")
            if problem is not None:
                errors.append({"code": problem[0], "message": problem[1], "line": number,
                               "param": None})  # fmt: skip
                continue
            seen.add(item["custom_id"])
            models.add(str(item["body"].get("model")))
            requests.append(item)
        if len(models) > 1:
            errors.append({"code": "mixed_models", "line": None, "param": "body.model",
                           "message": f"every request of a batch must use the same model, "
                                      f"found {sorted(models)}"})  # fmt: skip
        return requests, errors

    async def _run(self, batch: _Batch) -> None:
        try:
            await self._process(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an emulator bug must show as a failed batch, not a hang
            batch.record.update(
                status="failed",
                failed_at=int(time.time()),
                errors={"object": "list", "data": [{"code": "emulator_error", "line": None,
                        "param": None, "message": f"{type(exc).__name__}: {exc}"}]},
            )  # fmt: skip

    async def _process(self, batch: _Batch) -> None:
        record = batch.record
        await asyncio.sleep(0.05)  # "validating" is visible to a quick poll, as at OpenAI
        content = self.files[record["input_file_id"]].content
        requests, errors = self._validate(content, record["endpoint"])
        if errors:
            record.update(
                status="failed",
                failed_at=int(time.time()),
                errors={"object": "list", "data": errors},
            )
            return
        record["model"] = requests[0]["body"].get("model") if requests else None
        record["request_counts"]["total"] = len(requests)
        record.update(status="in_progress", in_progress_at=int(time.time()))
        results: dict[str, dict[str, Any]] = {}
        failures: dict[str, dict[str, Any]] = {}
        usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        expired = False

        async def one(item: dict[str, Any]) -> None:
            nonlocal expired
            assert self._limit is not None
            async with self._limit:
                if batch.cancel.is_set():
                    return
                if time.time() > batch.deadline:
                    expired = True
                    return
                line, ok = await self._execute(item)
            if ok:
                results[item["custom_id"]] = line
                record["request_counts"]["completed"] += 1
                reported = (line["response"]["body"].get("usage") or {}) if line else {}
                usage["input_tokens"] += int(reported.get("prompt_tokens") or 0)
                usage["output_tokens"] += int(reported.get("completion_tokens") or 0)
                usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
            else:
                failures[item["custom_id"]] = line
                record["request_counts"]["failed"] += 1

        await asyncio.gather(*(one(item) for item in requests))
        record.update(status="finalizing", finalizing_at=int(time.time()))
        cancelled = batch.cancel.is_set()
        code, message = (
            ("batch_cancelled", "The batch was cancelled before this request ran.")
            if cancelled
            else ("batch_expired", "This request could not be executed before the "
                  "completion window expired.")
        )  # fmt: skip
        output, error_lines = [], []
        for item in requests:
            custom_id = item["custom_id"]
            if custom_id in results:
                output.append(results[custom_id])
            elif custom_id in failures:
                error_lines.append(failures[custom_id])
            else:
                error_lines.append({"id": _new_id("batch_req"), "custom_id": custom_id,
                                    "response": None,
                                    "error": {"code": code, "message": message}})  # fmt: skip
        name = record["id"]
        if output:
            record["output_file_id"] = self._store(
                f"{name}_output.jsonl", "batch_output", _jsonl(output)
            )["id"]
        if error_lines:
            record["error_file_id"] = self._store(
                f"{name}_error.jsonl", "batch_output", _jsonl(error_lines)
            )["id"]
        record["usage"] = {
            **usage,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        now = int(time.time())
        if cancelled:
            record.update(status="cancelled", cancelled_at=now)
        elif expired:
            record.update(status="expired", expired_at=now)
        else:
            record.update(status="completed", completed_at=now)

    async def _execute(self, item: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Run one request line upstream; its output or error line, and whether it is 2xx."""
        custom_id, body = item["custom_id"], item["body"]
        line: dict[str, Any] = {"id": _new_id("batch_req"), "custom_id": custom_id}
        if body.get("stream"):
            response = {"status_code": 400, "request_id": _new_id("req"), "body": {"error": {
                "message": "streaming is not supported in batch requests",
                "type": "invalid_request_error", "param": "stream", "code": None}}}  # fmt: skip
            return {**line, "response": response, "error": None}, False
        try:
            reply = await self._client.post(
                f"{self.upstream}/chat/completions", json=body, headers=self._headers()
            )
        except Exception as exc:  # the upstream is down or timed out: the request failed
            error = {"code": "upstream_unreachable", "message": f"{type(exc).__name__}: {exc}"}
            return {**line, "response": None, "error": error}, False
        try:
            payload = reply.json()
        except ValueError:
            payload = {"error": {"message": reply.text[:1000], "type": "upstream_error"}}
        status = reply.status_code
        response = {"status_code": status, "request_id": _new_id("req"), "body": payload}
        return {**line, "response": response, "error": None}, 200 <= status < 300


@contextmanager
def running_emulator(upstream: str, *, port: int = 0, **settings: Any) -> Iterator[str]:
    """A :class:`BatchApiEmulator` served on 127.0.0.1 in a background thread; yields its
    base URL (``http://127.0.0.1:PORT/v1``). ``port=0`` picks a free port.

    For dry runs from Python::

        with running_emulator(server.base_url) as url:
            client = llm.root_client.with_options(base_url=url)
            job = BatchApiJob(runner, questions, provider=OpenAIBatchProvider(llm, client=client))
    """
    import socket
    import threading

    import uvicorn

    if port == 0:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
    emulator = BatchApiEmulator(upstream, **settings)
    server = uvicorn.Server(
        uvicorn.Config(emulator.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="batch-api-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the Batch API emulator did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def emulate_batch_api(
    upstream: Annotated[
        str,
        typer.Option(
            help="Base URL of the OpenAI-compatible chat server, e.g. http://127.0.0.1:8080/v1"
        ),
    ],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8090,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    concurrency: Annotated[
        int, typer.Option(min=1, help="Upstream requests in flight (1 for llama.cpp).")
    ] = 1,
    expire_after: Annotated[
        float | None,
        typer.Option(min=0.0, help="Emulated completion window in seconds (default 24 h)."),
    ] = None,
    max_requests_per_file: Annotated[int, typer.Option(min=1)] = 50_000,
    max_bytes_per_file: Annotated[int, typer.Option(min=1)] = 200 * 1024 * 1024,
    upstream_api_key: Annotated[
        str | None, typer.Option(envvar="AUTODEMO_UPSTREAM_API_KEY", help="Key for the upstream.")
    ] = None,
) -> None:
    """Serve a local OpenAI Batch API (/v1/files, /v1/batches) that runs each batch's
    requests against UPSTREAM: dry-run `autodemo run --via batch-api` offline."""
    import uvicorn

    emulator = BatchApiEmulator(
        upstream,
        upstream_api_key=upstream_api_key,
        concurrency=concurrency,
        expire_after=expire_after,
        max_requests_per_file=max_requests_per_file,
        max_bytes_per_file=max_bytes_per_file,
    )
    typer.echo(
        f"Batch API emulator on http://{host}:{port}/v1 (upstream {emulator.upstream})", err=True
    )
    uvicorn.run(emulator.app, host=host, port=port, log_level="warning")


if __name__ == "__main__":  # python -m langchain_autodemo.batch_api.emulator --upstream URL
    typer.run(emulate_batch_api)

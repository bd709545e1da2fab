"""The Open Inference Protocol's REST routes (KServe V2), beside the mesh's own, so that KServe- and
Seldon-style clients call a served model unchanged.

``POST /v2/models/{name}[/versions/{version}]/infer`` takes tensors by input name (one column each, shape
``[N]`` or ``[N, 1]``) and answers the ``prediction`` tensor (the label or value), for classifiers the
``probabilities`` (``[N, classes]``, the classes named in its parameters) and for binary ones the
positive class's ``probability``, and ``request_id``; the
records go through the same validation, scoring and sampling as ``/predict_batch``. ``GET /v2/models/
{name}`` describes the model's inputs, ``/v2/models/{name}/ready`` says whether it answers now, and
``/v2/health/live`` | ``/v2/health/ready`` are the server's. Errors are the protocol's ``{"error": ...}``
(with the mesh's ``field``), 400 for a bad request, 404 for an unknown model or version, 503 while loading.

The binary tensor data extension (Triton's, which KServe adopted) is spoken both ways, since it is what
``tritonclient.http`` sends and asks for by default: a body whose first ``Inference-Header-Content-Length``
bytes are the JSON request, followed by the raw data of each input that gives ``binary_data_size`` in its
parameters; outputs asked for with ``binary_data`` (or all, with ``binary_data_output``) come back the same
way. Asked-for ``outputs`` are the only ones answered.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import bentoml
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.serving.catalog import ModelLookupError
from services.serving.deps import ServingDeps
from services.serving.holder import LoadedModel
from services.serving.predictions import answer, traced
from services.serving.records import RecordError
from services.serving.refusals import refusal

# The protocol's tensor datatypes of the dataset's column types.
DATATYPES = {"int": "INT64", "float": "FP64", "bool": "BOOL", "category": "BYTES", "str": "BYTES"}
# The binary extension's layout of each fixed-size datatype (little-endian, row-major); BYTES elements are
# each a 4-byte little-endian length and that many bytes.
BINARY_LAYOUT = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
    "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip
HEADER_LENGTH = "Inference-Header-Content-Length"


class TensorError(ValueError):
    """A request body that is not a valid inference request; ``field`` names where."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def _deps() -> ServingDeps:
    deps: ServingDeps = bentoml.get_current_service().deps
    return deps


def _error(deps: ServingDeps, status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=deps.worker_header)


def records_of(body: Any) -> list[dict[str, Any]]:
    """An inference request's input tensors (one per column) as records, or TensorError."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise TensorError("inputs", "a non-empty list of input tensors is required")
    columns: dict[str, list[Any]] = {}
    for index, tensor in enumerate(body["inputs"]):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise TensorError(where, "a tensor is an object with a name, shape, datatype and data")
        data, shape = tensor.get("data"), tensor.get("shape")
        if not isinstance(data, list):
            raise TensorError(f"{where}.data", "a flat list of values is required")
        if not isinstance(shape, list) or shape not in ([len(data)], [len(data), 1]):
            raise TensorError(f"{where}.shape", f"must be [{len(data)}] or [{len(data)}, 1] for one column")
        if tensor["name"] in columns:
            raise TensorError(f"{where}.name", f"input {tensor['name']!r} is given twice")
        columns[tensor["name"]] = data
    lengths = {len(data) for data in columns.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise TensorError("inputs", "every input tensor holds the same number (> 0) of rows")
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def request_of(raw: bytes, header_length: str | None) -> dict[str, Any]:
    """The JSON inference request in ``raw``, with the data of binary inputs decoded into ``data``."""
    if header_length is None:
        head, tail = raw, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise TensorError(HEADER_LENGTH, f"must be the JSON header's length, at most {len(raw)} bytes")
        head, tail = raw[: int(header_length)], raw[int(header_length) :]
    try:
        body = json.loads(head)
    except ValueError:
        raise TensorError("body", "must be JSON (or JSON then binary tensor data)") from None
    offset = 0
    for index, tensor in enumerate(body.get("inputs") or [] if isinstance(body, dict) else []):
        size = tensor.get("parameters", {}).get("binary_data_size") if isinstance(tensor, dict) else None
        if size is None:
            continue
        where = f"inputs[{index}]"
        if not isinstance(size, int) or size < 0 or offset + size > len(tail):
            raise TensorError(f"{where}.parameters.binary_data_size", f"{len(tail) - offset} bytes are left")
        tensor["data"] = _decoded(tail[offset : offset + size], tensor.get("datatype"), where)
        offset += size
    if offset != len(tail):
        raise TensorError("body", f"{len(tail) - offset} bytes of binary data belong to no input")
    return body


def _decoded(data: bytes, datatype: Any, where: str) -> list[Any]:
    if datatype == "BYTES":
        values, offset = [], 0
        while offset < len(data):
            if offset + 4 > len(data) or offset + 4 + (n := struct.unpack_from("<I", data, offset)[0]) > len(
                data
            ):
                raise TensorError(
                    f"{where}.parameters.binary_data_size", "a BYTES element runs past the data"
                )
            try:
                values.append(data[offset + 4 : offset + 4 + n].decode())
            except UnicodeDecodeError:
                raise TensorError(f"{where}.data", "BYTES elements must be UTF-8 text") from None
            offset += 4 + n
        return values
    layout = BINARY_LAYOUT.get(str(datatype))
    if layout is None:
        raise TensorError(f"{where}.datatype", f"must be BYTES or one of {', '.join(BINARY_LAYOUT)}")
    if len(data) % np.dtype(layout).itemsize:
        raise TensorError(f"{where}.parameters.binary_data_size", f"is no whole number of {datatype} values")
    return np.frombuffer(data, dtype=layout).tolist()


def _encoded(tensor: dict[str, Any]) -> bytes:
    if tensor["datatype"] == "BYTES":
        texts = [str(value).encode() for value in tensor["data"]]
        return b"".join(struct.pack("<I", len(text)) + text for text in texts)
    return np.asarray(tensor["data"], dtype=BINARY_LAYOUT[tensor["datatype"]]).tobytes()


def requested(body: dict[str, Any], tensors: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[str]]:
    """The output tensors the request asks for (all when it names none), and which of them in binary."""
    everything_binary = bool((body.get("parameters") or {}).get("binary_data_output"))
    asked = body.get("outputs")
    if asked is None:
        return tensors, {t["name"] for t in tensors} if everything_binary else set()
    by_name = {t["name"]: t for t in tensors}
    chosen, binary = [], set()
    for index, output in enumerate(asked if isinstance(asked, list) else [None]):
        if not isinstance(output, dict) or output.get("name") not in by_name:
            raise TensorError(f"outputs[{index}].name", f"must be one of {', '.join(by_name)}")
        chosen.append(by_name[output["name"]])
        if (output.get("parameters") or {}).get("binary_data", everything_binary):
            binary.add(output["name"])
    return chosen, binary


def response_of(answer: dict[str, Any], binary: set[str], headers: dict[str, str]) -> Response:
    """``answer`` as JSON, or with the ``binary`` outputs' data after the JSON header."""
    if not binary:
        return JSONResponse(answer, headers=headers)
    chunks = []
    for tensor in answer["outputs"]:
        if tensor["name"] in binary:
            chunks.append(_encoded(tensor))
            tensor["parameters"] = {**tensor.get("parameters", {}), "binary_data_size": len(chunks[-1])}
            del tensor["data"]
    head = json.dumps(answer).encode()
    return Response(
        head + b"".join(chunks),
        media_type="application/octet-stream",
        headers={**headers, HEADER_LENGTH: str(len(head))},
    )


def _label_datatype(loaded: LoadedModel) -> str:
    if not loaded.classes:
        return "FP64"
    first = loaded.classes[0]
    return "BOOL" if isinstance(first, bool) else "INT64" if isinstance(first, int) else "BYTES"


def output_specs(loaded: LoadedModel, rows: int) -> list[dict[str, Any]]:
    """The output tensors of ``loaded``'s answers (``rows`` = -1 in metadata): name, datatype, shape."""
    specs: list[dict[str, Any]] = [
        {"name": "prediction", "datatype": _label_datatype(loaded), "shape": [rows]}
    ]
    if loaded.task == "binary":
        specs.append({"name": "probability", "datatype": "FP64", "shape": [rows]})
    if loaded.classes:
        specs.append(
            {
                "name": "probabilities",
                "datatype": "FP64",
                "shape": [rows, len(loaded.classes)],
                "parameters": {"classes": loaded.classes},
            }
        )
    specs.append({"name": "request_id", "datatype": "BYTES", "shape": [rows]})
    return specs


def _outputs(loaded: LoadedModel, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tensors = output_specs(loaded, len(results))
    for tensor in tensors:
        if tensor["name"] == "probabilities":  # row-major, as the protocol flattens a [N, K] tensor
            labels = [str(c) for c in loaded.classes or []]
            tensor["data"] = [r["probabilities"][label] for r in results for label in labels]
        else:
            tensor["data"] = [r[tensor["name"]] for r in results]
    return tensors


async def _loaded(deps: ServingDeps, request: Request) -> LoadedModel | JSONResponse:
    """The served version the path names, or the protocol's refusal."""
    try:
        loaded = await deps.models.find(request.path_params["name"])
    except ModelLookupError as exc:
        return refusal(exc, deps.worker_header)
    version = request.path_params.get("version")
    if version is not None and version != loaded.version:
        message = f"version {version} of {loaded.name} is not served (serving {loaded.version})"
        return _error(deps, 404, message, "version")
    return loaded


async def infer(request: Request) -> Response:
    deps = _deps()

    async def respond() -> Response:
        loaded = await _loaded(deps, request)
        if isinstance(loaded, JSONResponse):
            return loaded
        try:
            body = request_of(await request.body(), request.headers.get(HEADER_LENGTH))
            results = answer(loaded, deps.sampler, records_of(body), "inputs")
            outputs, binary = requested(body, _outputs(loaded, results))
        except (TensorError, RecordError) as exc:
            return _error(deps, 400, str(exc), exc.field)
        response: dict[str, Any] = {
            "model_name": loaded.name,
            "model_version": loaded.version,
            "outputs": outputs,
        }
        if isinstance(body.get("id"), str):
            response["id"] = body["id"]
        return response_of(response, binary, {**loaded.headers, **deps.worker_header})

    return await traced(deps.tracer, "/v2/models/{name}/infer", respond)


async def model_metadata(request: Request) -> JSONResponse:
    deps = _deps()
    loaded = await _loaded(deps, request)
    if isinstance(loaded, JSONResponse):
        return loaded
    inputs = [
        {"name": c, "datatype": DATATYPES[loaded.schema.column(c).dtype], "shape": [-1]}
        for c in loaded.columns
    ]
    body = {
        "name": loaded.name,
        "versions": [loaded.version],
        "platform": "retrain-mesh",
        "inputs": inputs,
        "outputs": output_specs(loaded, -1),
    }
    return JSONResponse(body, headers={**loaded.headers, **deps.worker_header})


async def model_ready(request: Request) -> JSONResponse:
    deps = _deps()
    loaded = await _loaded(deps, request)
    if isinstance(loaded, JSONResponse):
        return loaded  # 503 while loading (its load started), 404 when not declared
    return JSONResponse({"name": loaded.name, "ready": True}, headers=deps.worker_header)


async def server_live(_: Request) -> JSONResponse:
    return JSONResponse({"live": True})


async def server_ready(_: Request) -> JSONResponse:
    ready = _deps().models.ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


ROUTES = [
    Route("/v2/health/live", server_live),
    Route("/v2/health/ready", server_ready),
    Route("/v2/models/{name}", model_metadata),
    Route("/v2/models/{name}/ready", model_ready),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}", model_metadata),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready),
    Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
]

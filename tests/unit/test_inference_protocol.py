"""Code tests of the Open Inference Protocol's binary tensor data extension (services/serving/
inference_protocol.py): requests as tritonclient builds them, answers as it reads them, and bad framing
named by field. Over HTTP, with the real client, in tests/integration/test_serving_models.py."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.http import InferResult

from services.serving.inference_protocol import (
    HEADER_LENGTH,
    TensorError,
    records_of,
    request_of,
    requested,
    response_of,
)


def _client_request(*inputs: triton.InferInput, **options: Any) -> tuple[bytes, str | None]:
    """The body and header-length tritonclient sends for ``inputs``."""
    body, header_length = triton.InferenceServerClient.generate_request_body(list(inputs), **options)
    return body, None if header_length is None else str(header_length)


def _input(name: str, values: np.ndarray, datatype: str, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(values.shape), datatype)
    tensor.set_data_from_numpy(values, binary_data=binary)
    return tensor


def test_a_binary_request_reads_as_the_json_one() -> None:
    columns = (
        ("region", np.array([b"north", "süd".encode()], dtype=object), "BYTES"),
        ("age", np.array([41, 7], dtype=np.int64), "INT64"),
        ("income", np.array([5.5, 0.25], dtype=np.float32), "FP32"),
        ("active", np.array([True, False]), "BOOL"),
    )
    expected = [
        {"region": "north", "age": 41, "income": 5.5, "active": True},
        {"region": "süd", "age": 7, "income": 0.25, "active": False},
    ]
    for binary in (True, False):
        body, length = _client_request(*(_input(n, v, d, binary) for n, v, d in columns))
        assert (length is None) is not binary
        assert records_of(request_of(body, length)) == expected


def test_outputs_go_back_in_binary_as_tritonclient_reads_them() -> None:
    outputs = [
        {"name": "prediction", "datatype": "BYTES", "shape": [2], "data": ["yes", "no"]},
        {"name": "probabilities", "datatype": "FP64", "shape": [2, 2], "data": [0.1, 0.9, 0.8, 0.2]},
    ]
    body = {"inputs": [], "parameters": {"binary_data_output": True}}
    chosen, binary = requested(body, outputs)
    response = response_of({"model_name": "m", "outputs": chosen}, binary, {})
    assert response.headers["content-type"] == "application/octet-stream"
    result = InferResult.from_response_body(
        bytes(response.body), header_length=int(response.headers[HEADER_LENGTH])
    )
    assert result.as_numpy("prediction").tolist() == [b"yes", b"no"]
    assert result.as_numpy("probabilities").tolist() == [[0.1, 0.9], [0.8, 0.2]]


def test_only_the_outputs_asked_for_are_answered_each_in_its_own_form() -> None:
    outputs = [
        {"name": "prediction", "datatype": "BYTES", "shape": [1], "data": ["yes"]},
        {"name": "probability", "datatype": "FP64", "shape": [1], "data": [0.9]},
    ]
    asked = {"outputs": [{"name": "probability", "parameters": {"binary_data": True}}]}
    assert requested(asked, outputs) == ([outputs[1]], {"probability"})
    assert requested({}, outputs) == (outputs, set())
    with pytest.raises(TensorError, match=r"^outputs\[0\]\.name: must be one of prediction, probability"):
        requested({"outputs": [{"name": "nope"}]}, outputs)


def _framed(datatype: str, rows: int, size: int, tail: bytes) -> tuple[bytes, str]:
    """One binary input declaring ``size`` bytes, followed by ``tail``; and the header's length."""
    head = json.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": datatype, "shape": [rows], "parameters": {"binary_data_size": size}}
            ]
        }
    ).encode()
    return head + tail, str(len(head))


@pytest.mark.parametrize(
    ("body", "length", "field"),
    [
        (b'{"inputs": []}', "99", HEADER_LENGTH),
        (b'{"inputs": [', None, "body"),
        (*_framed("FP64", 2, 16, b"\x00" * 8), "inputs[0].parameters.binary_data_size"),
        (*_framed("FP64", 1, 8, b"\x00" * 12), "body"),
        (*_framed("FP64", 1, 6, b"\x00" * 6), "inputs[0].parameters.binary_data_size"),
        (*_framed("BYTES", 1, 6, b"\x09\x00\x00\x00ab"), "inputs[0].parameters.binary_data_size"),
        (*_framed("COMPLEX", 1, 8, b"\x00" * 8), "inputs[0].datatype"),
    ],
    ids=["header past the body", "not json", "data cut short", "data left over", "half a value",
         "bytes element past the end", "unknown datatype"],
)  # fmt: skip
def test_bad_binary_framing_is_named(body: bytes, length: str | None, field: str) -> None:
    with pytest.raises(TensorError) as refused:
        request_of(body, length)
    assert refused.value.field == field


def test_a_json_request_is_unchanged() -> None:
    body = {"id": "1", "inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1.5]}]}
    assert request_of(json.dumps(body).encode(), None) == body

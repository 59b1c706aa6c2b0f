"""A standalone model as ONNX (dynamic batch; relative position included), and ONNX Runtime sessions for it.

``onnx`` and ``onnxruntime`` are an optional extra (``pip install 'autoformer-pipeline[onnx]'``): without them
these functions fail with one line saying so.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import torch

from pipeline.shared.errors import UserError

INSTALL_HINT = "install the ONNX extra: pip install 'autoformer-pipeline[onnx]' (onnx and onnxruntime)"
OPSET = 17


def require_onnxruntime() -> Any:
    try:
        import onnxruntime  # optional extra: imported only where ONNX is asked for
    except ImportError:
        raise UserError(f"ONNX Runtime is not installed; {INSTALL_HINT}") from None
    return onnxruntime


def onnx_bytes(module: torch.nn.Module, example: torch.Tensor, names: tuple[str, str] = ("images", "logits")) -> bytes:
    """``module`` (eval mode) as an ONNX graph with one input and one output (named ``names``), dynamic batch."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; checked here for a clear message)
    except ImportError:
        raise UserError(f"the onnx package is not installed; {INSTALL_HINT}") from None
    buffer = io.BytesIO()
    axes = {names[0]: {0: "batch"}, names[1]: {0: "batch"}}
    with warnings.catch_warnings():  # the tracer's notes on shapes it records as constants (they are constants)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            buffer,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, and it handles these models
            opset_version=OPSET,
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_axes=axes,
        )
    return buffer.getvalue()


def onnx_session(model: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

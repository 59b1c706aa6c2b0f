"""A standalone model as ONNX (dynamic batch; relative position included), and ONNX Runtime sessions for it.

``onnx``, ``onnxscript`` (the exporter) and ``onnxruntime`` are an optional extra
(``pip install 'autoformer-pipeline[onnx]'``): without them these functions fail with one line saying so.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import torch

from pipeline.shared.errors import UserError

INSTALL_HINT = "install the ONNX extra: pip install 'autoformer-pipeline[onnx]' (onnx, onnxscript and onnxruntime)"
# 18 is the oldest opset the dynamo exporter writes natively (an older one would go through ONNX's version
# converter); ONNX Runtime has run it since 1.14.
OPSET = 18


def require_onnxruntime() -> Any:
    try:
        import onnxruntime  # optional extra: imported only where ONNX is asked for
    except ImportError:
        raise UserError(f"ONNX Runtime is not installed; {INSTALL_HINT}") from None
    return onnxruntime


def _require_exporter() -> None:
    """The dynamo exporter needs onnx and onnxscript; checked first so a missing one is one clear line."""
    for package in ("onnx", "onnxscript"):
        try:
            importlib.import_module(package)
        except ImportError:
            raise UserError(f"the {package} package is not installed; {INSTALL_HINT}") from None


def onnx_bytes(module: torch.nn.Module, example: torch.Tensor, names: tuple[str, str] = ("images", "logits")) -> bytes:
    """``module`` (eval mode) as an ONNX graph with one input and one output (named ``names``), dynamic batch.

    Exported with the dynamo exporter (``torch.export`` underneath; the TorchScript one is deprecated). Its
    progress lines and notes are kept off the console: the profiler exports every block it times. The graph
    comes back as one serialized ``ModelProto``, weights inline, whatever their size on disk would be.
    """
    _require_exporter()
    batch = torch.export.Dim("batch")  # the name the ONNX input and output carry for their first axis
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def onnx_session(model: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

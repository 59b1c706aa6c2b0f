"""pipeline.model.onnx_export with torch's dynamo exporter: one bytes blob, names, a dynamic batch even when the
example has batch 1, ONNX Runtime logits within 1e-4 of torch, and nothing printed while exporting."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import space_for_model_tests

from pipeline.core.sampling import sample_architecture
from pipeline.model import Supernet
from pipeline.model.onnx_export import OPSET, onnx_bytes, onnx_session

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")


def test_export_is_one_quiet_blob_with_a_dynamic_batch(capfd: pytest.CaptureFixture[str]) -> None:
    space = space_for_model_tests("digits")
    model = Supernet(space).extract(sample_architecture(space, random.Random(5))).eval()
    example = torch.zeros(1, space.in_chans, space.image_size, space.image_size)  # batch 1, as subnet_dir exports
    blob = onnx_bytes(model, example)
    assert capfd.readouterr() == ("", "")  # no exporter progress lines, warnings or log records
    assert isinstance(blob, bytes)
    proto = onnx.load_from_string(blob)
    assert [o.version for o in proto.opset_import if o.domain == ""] == [OPSET]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)  # all inline
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("images", "logits")
    assert inp.type.tensor_type.shape.dim[0].dim_param == out.type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnx_session(blob, threads=1)
    for batch in (1, 5):
        images = torch.randn(batch, space.in_chans, space.image_size, space.image_size)
        with torch.no_grad():
            expected = model(images).numpy()
        got = session.run(None, {"images": images.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4

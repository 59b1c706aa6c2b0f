"""Timing on the device the profiler runs on: single blocks, the fixed parts, whole architectures.

Plain Python (the build places it with ``ray.remote`` on the target node, or runs it in-process for
``--device local``). Modules are built from the standalone model's own pieces with random weights (timing does
not depend on their values), put in eval mode, and timed under ``torch.inference_mode`` (torch eager) or as an
ONNX Runtime CPU session of their exported graph, by ``torch.utils.benchmark.Timer.blocked_autorange``
(``shared.timing.median_ms``): it warms up, synchronizes an accelerator around its timings, and keeps the median.
"""

from __future__ import annotations

import os
import platform
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.arch import Architecture
from pipeline.core.space import SearchSpace, mlp_hidden_dim
from pipeline.model.onnx_export import onnx_bytes, onnx_session, require_onnxruntime
from pipeline.model.static import Attention, Block, StaticViT
from pipeline.shared.timing import MIN_SECONDS, median_ms

CACHE_BYTES = 2**30  # weights of the modules and sessions kept between rounds of a build


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Profiler:
    def __init__(
        self, space: dict[str, Any], runtime: str, batch: int, threads: int, seconds: float = MIN_SECONDS
    ) -> None:  # fmt: skip
        self.space = SearchSpace.from_dict(space, source="latency profiler")
        self.runtime, self.batch, self.threads, self.seconds = runtime, batch, threads, seconds
        self._prepared: OrderedDict[tuple, tuple[Callable[[], Any], int]] = OrderedDict()
        torch.set_num_threads(threads)
        if runtime == "onnxruntime":
            require_onnxruntime()
        self.device = torch.device("cuda" if runtime == "torch" and torch.cuda.is_available() else "cpu")

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "host": platform.node(),
            "pid": os.getpid(),
            "cpu": cpu_model(),
            "threads": self.threads,
            "torch": torch.__version__,
            "runtime": self.runtime,
        }
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        if self.runtime == "onnxruntime":
            info["onnxruntime"] = require_onnxruntime().__version__
        return info

    # ---- what is timed ---------------------------------------------------------------------------------------
    def block_ms(self, embed_dim: int, num_heads: int, mlp_ratio: float) -> float:
        return self._timed(
            ("block", embed_dim, num_heads, mlp_ratio), lambda: self._block(embed_dim, num_heads, mlp_ratio)
        )

    def fixed_ms(self, embed_dim: int) -> float:
        """Patch embedding, tokens, final norm, pooling and head: a model of one embedding dim without blocks."""
        return self._timed(("fixed", embed_dim), lambda: self._fixed(embed_dim))

    def arch_ms(self, arch: dict[str, Any]) -> float:
        """A whole architecture end to end (what the table is validated against)."""
        model = lambda: (StaticViT(Architecture.from_dict(arch), self.space.fixed_parts()), self._images())  # noqa: E731
        return self._timed(("arch", Architecture.from_dict(arch).key), model)

    def model_ms(self, model: nn.Module) -> float:
        """A given model (e.g. an exported one), end to end."""
        return median_ms(self._runner(model, self._images()), self.threads, self.seconds)

    # ---- what is built ---------------------------------------------------------------------------------------
    def _block(self, embed_dim: int, num_heads: int, mlp_ratio: float) -> tuple[nn.Module, torch.Tensor]:
        s = self.space
        relative = (s.max_relative_position, s.grid_size) if s.relative_position else None
        attention = Attention(embed_dim, num_heads, s.head_dim, s.qkv_bias, relative, 0.0, 0.0)
        block = Block(embed_dim, mlp_hidden_dim(embed_dim, mlp_ratio), attention, 0.0, 0.0, s.layer_norm_eps)
        return block, torch.randn(self.batch, s.num_tokens, embed_dim)

    def _fixed(self, embed_dim: int) -> tuple[nn.Module, torch.Tensor]:
        s = self.space
        model = StaticViT(Architecture(embed_dim, 1, (s.num_heads[0],), (s.mlp_ratio[0],)), s.fixed_parts())
        model.blocks = nn.ModuleList()
        return model, self._images()

    def _images(self) -> torch.Tensor:
        s = self.space
        return torch.randn(self.batch, s.in_chans, s.image_size, s.image_size)

    # ---- timing ----------------------------------------------------------------------------------------------
    def _timed(self, key: tuple, build: Callable[[], tuple[nn.Module, torch.Tensor]]) -> float:
        """Time what ``key`` names; what was built for it (a module, an ONNX session) is kept for the next
        rounds of the build while it fits in ``CACHE_BYTES`` (the least recently timed go first)."""
        if key in self._prepared:
            self._prepared.move_to_end(key)
            run = self._prepared[key][0]
        else:
            module, example = build()
            run = self._runner(module, example)
            self._prepared[key] = (run, sum(p.numel() * p.element_size() for p in module.parameters()))
            while len(self._prepared) > 1 and sum(size for _, size in self._prepared.values()) > CACHE_BYTES:
                self._prepared.popitem(last=False)
        return median_ms(run, self.threads, self.seconds)  # the Timer synchronizes a GPU around each block it times

    def _runner(self, module: nn.Module, example: torch.Tensor) -> Callable[[], Any]:
        module = module.eval()
        if self.runtime == "onnxruntime":
            session = onnx_session(onnx_bytes(module, example, ("x", "y")), self.threads)
            feed = {"x": example.numpy().astype(np.float32)}
            return lambda: session.run(None, feed)
        module, example = module.to(self.device), example.to(self.device)

        def run() -> None:
            with torch.inference_mode():
                module(example)

        return run

"""Scoring candidates with inherited weights: the work one evaluator actor does.

An evaluator holds the trained supernet and the whole search split in memory for its lifetime, so a
candidate costs only its own forward passes. Weights and images arrive as numpy arrays from the object
store: on CPU the arrays are used in place (read-only shared memory, one copy per node however many
evaluators it runs); on a GPU they are copied to the device once. Plain Python, so tests can use it without
Ray; the driver wraps it in ``ray.remote``.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np
import torch

from pipeline.core.arch import Architecture
from pipeline.data.arrays import channel_stats, normalize, normalized_batches, paired_scores, read_only_tensor
from pipeline.model.supernet_dir import build_supernet
from pipeline.shared.cluster import node_id
from pipeline.shared.faults import claim_fault, exit_now, fault_parameter
from pipeline.shared.metrics import autocast_factory
from pipeline.shared.timing import median_ms

LATENCY_REPEAT_S = 0.01  # timed seconds one of search.latency_repeats buys (see Evaluator.latency_ms)


class Evaluator:
    def __init__(
        self,
        supernet_config: dict[str, Any],
        weights: dict[str, np.ndarray],
        images: np.ndarray,
        labels: np.ndarray,
        normalization: dict[str, list[float]],
        batch_size: int,
        latency_batch: int,
        latency_repeats: int,
        device: str = "cpu",
        threads: int | None = None,
        time_latency: bool = True,
    ) -> None:
        start = time.perf_counter()
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        model = build_supernet(supernet_config)
        state = {k: read_only_tensor(v).to(self.device) for k, v in weights.items()}
        model.load_state_dict(state, strict=True, assign=True)
        self.model = model.to(self.device).eval()
        self.images = read_only_tensor(images).to(self.device)
        self.labels = read_only_tensor(labels).to(self.device)
        self.mean, self.std = channel_stats(normalization, self.device)
        self.batch_size, self.latency_repeats = batch_size, latency_repeats
        self.time_latency = time_latency  # off when the search predicts latency with a latency model
        # The latency batch is the same for every candidate: the first latency_batch images (repeated if fewer).
        index = torch.arange(latency_batch, device=self.device) % self.images.shape[0]
        self.latency_images = normalize(self.images[index], self.mean, self.std)
        self.autocast = autocast_factory(self.device)
        self.exit_after, self.calls = fault_parameter("evaluator_exit_after"), 0
        self.node, self.node_id = socket.gethostname(), node_id()
        self.load_s = time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        name = (
            torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else f"cpu x{torch.get_num_threads()} threads"
        )
        return {
            "node": self.node,
            "pid": os.getpid(),
            "device": name,
            "load_s": self.load_s,
            "images": int(self.images.shape[0]),
        }

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def latency_ms(self, static: torch.nn.Module) -> float:
        """Median milliseconds per forward pass of ``latency_batch`` images on this actor's device.

        Timed by ``torch.utils.benchmark`` (``pipeline.shared.timing.median_ms``: warm-up, GPU
        synchronization, the median of blocks of passes), with this actor's CPU threads. It chooses how many
        passes make a block, so ``search.latency_repeats`` cannot be a count of passes any more: it sets how long
        to time, ``LATENCY_REPEAT_S`` each (blocked_autorange's min_run_time; 5 repeats: at least 50 ms after
        the warm-up), so more repeats still buy a steadier median. A candidate slower than that is timed as
        one warm-up pass and one timed pass.
        """
        with self.autocast():  # the Timer runs the passes in this thread, under this autocast and no_grad
            run = lambda: static(self.latency_images)
            return median_ms(run, torch.get_num_threads(), self.latency_repeats * LATENCY_REPEAT_S)

    def evaluate(self, arch: dict[str, Any], max_latency_ms: float | None = None) -> dict[str, Any]:
        """Latency of the extracted static subnet, then (if within ``max_latency_ms``) search-split scores."""
        self.calls += 1
        if self.exit_after is not None and self.calls > self.exit_after and claim_fault():
            exit_now(f"[search] fault injection: evaluator pid {os.getpid()} exits at its candidate {self.calls}")
        start = time.perf_counter()
        static = self.model.extract(Architecture.from_dict(arch)).to(self.device).eval()
        latency = self.latency_ms(static) if self.time_latency else float("nan")
        out: dict[str, Any] = {
            "latency_ms": latency,
            "evaluator": f"{self.node}:{os.getpid()}",
            "node": self.node_id,
        }
        if max_latency_ms is not None and latency > max_latency_ms:
            out.update(status="over_latency", top1=float("nan"), top5=float("nan"), loss=float("nan"))
        else:
            batches = normalized_batches(self.images, self.labels, self.mean, self.std, self.batch_size)
            out.update(status="ok", **paired_scores(static, batches, self.device, self.autocast()))
        self._sync()
        out["eval_s"] = time.perf_counter() - start
        return out

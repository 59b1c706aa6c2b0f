"""Latency on the hardware users deploy to: latency tables measured by a profiler placed on the target device
(a Ray custom resource, or this machine), validated end to end, written as ``pipeline.core.latency_model`` files."""

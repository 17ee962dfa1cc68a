"""Accelerator memory and utilisation from NVML (nvidia-ml-py), for workers that run on CUDA.

Read when Prometheus scrapes, for the devices this process uses (matched by UUID, so that
CUDA_VISIBLE_DEVICES renumbering does not mislabel them). Without NVML (no driver, no library)
nothing is registered and the reason is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class AcceleratorCollector(Collector):
    """`tokenyard_accelerator_*{device}` for each (index, NVML handle) given."""

    def __init__(self, nvml: Any, devices: list[tuple[str, Any]]) -> None:
        self._nvml = nvml
        self._devices = devices

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "tokenyard_accelerator_memory_used_bytes", "Accelerator memory in use.", labels=["device"]
        )
        total = GaugeMetricFamily("tokenyard_accelerator_memory_total_bytes", "Accelerator memory.", labels=["device"])
        busy = GaugeMetricFamily(
            "tokenyard_accelerator_utilization_ratio",
            "Share of the last sample period in which a kernel ran on the accelerator (NVML), 0 to 1.",
            labels=["device"],
        )
        for index, handle in self._devices:
            try:
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            except self._nvml.NVMLError as exc:
                logger.debug("NVML read of device %s failed: %s", index, exc)
                continue
            used.add_metric([index], float(memory.used))
            total.add_metric([index], float(memory.total))
            busy.add_metric([index], rates.gpu / 100.0)
        yield used
        yield total
        yield busy


def register_accelerator_metrics(registry: CollectorRegistry, on_cuda: bool) -> bool:
    """Register the accelerator collector; it reads NVML for the CUDA devices torch sees when the
    worker runs on CUDA, and exports the (empty) families otherwise, so that names never depend on
    the machine. False when the worker is on CUDA but NVML is unavailable."""
    nvml, devices = None, []
    if on_cuda:
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            nvml = pynvml
            devices = [(str(i), _handle(pynvml, torch, i)) for i in range(torch.cuda.device_count())]
        except Exception as exc:  # ImportError, NVMLError (no driver), or no CUDA device
            logger.warning("accelerator metrics off: NVML unavailable (%s)", exc)
            nvml, devices = None, []
    registry.register(AcceleratorCollector(nvml, devices))
    return nvml is not None


def _handle(pynvml: Any, torch: Any, index: int) -> Any:
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        except pynvml.NVMLError:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(index)

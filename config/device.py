"""Resolve ``UPS_DEVICE`` to a torch device, failing fast when a GPU is demanded but absent."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is heavy; only the commands that need it import it
    import torch


class DeviceError(RuntimeError):
    pass


def resolve_device(choice: str) -> "torch.device":
    import torch

    if choice == "cpu":
        return torch.device("cpu")
    if choice == "gpu":
        if not torch.cuda.is_available():
            raise DeviceError(
                "UPS_DEVICE=gpu but CUDA is not available on this machine "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda or 'none'}); "
                "set UPS_DEVICE=cpu or UPS_DEVICE=auto"
            )
        return torch.device("cuda")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise DeviceError(f"UPS_DEVICE must be auto, gpu or cpu, not {choice!r}")

"""Device and dtype rules, defined once for the whole package.

``resolve_device("auto")`` is CUDA when a GPU is present, else the CPU. Asking for CUDA on a machine without one
is a user error, except where a stored preference is being honoured (a ``.mdsr`` file written on a GPU machine
and read on a laptop): there ``fallback=True`` computes on the CPU with a warning instead.
"""

from __future__ import annotations

import warnings

import torch

from .errors import UserError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str | torch.device | None = "auto", *, fallback: bool = False) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:i`` as given.

    Raises ``UserError`` for an unknown name, and for CUDA without a GPU unless ``fallback`` (then: CPU and a
    ``UserWarning``).
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda[:i]")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda[:i]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if fallback:
                warnings.warn(f"device {name!r} is not available here; computing on the CPU", stacklevel=2)
                return torch.device("cpu")
            raise UserError(f"device {name!r} was asked for but no CUDA GPU is available; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtypes themselves) → torch dtype; anything else is a ValueError."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be float32 or float64, not {dtype}")
        return dtype
    try:
        return DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}") from None


def dtype_name(dtype: torch.dtype) -> str:
    """torch dtype → its name in ``DTYPES``."""
    return {v: k for k, v in DTYPES.items()}[dtype]

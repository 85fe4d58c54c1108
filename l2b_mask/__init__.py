"""EMIT L2B cloud mask: the science as a library.

The names below are loaded on first use (PEP 562), so `import l2b_mask` imports neither torch
nor xarray: `cloud_probability` and `cloud_flag` (files to arrays), `open_product` (a product
as an xarray Dataset), `mask_radiance` and `mask_reflectance` (arrays in memory to a Dataset).
See docs/python.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["cloud_flag", "cloud_probability", "mask_radiance", "mask_reflectance",
           "open_product"]

if TYPE_CHECKING:
    from l2b_mask.algorithm.inference import cloud_flag, cloud_probability
    from l2b_mask.dataset import open_product
    from l2b_mask.in_memory import mask_radiance, mask_reflectance

# public name -> module that defines it
_LAZY = {
    "cloud_probability": "l2b_mask.algorithm.inference",
    "cloud_flag": "l2b_mask.algorithm.inference",
    "open_product": "l2b_mask.dataset",
    "mask_radiance": "l2b_mask.in_memory",
    "mask_reflectance": "l2b_mask.in_memory",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'l2b_mask' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

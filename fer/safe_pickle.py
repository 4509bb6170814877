"""Read a pickle of numpy arrays without running code from the file.

Unpickling runs whatever callables the file names, so :func:`safe_load_pickle` only lets through
the few numpy needs to rebuild arrays. The VGGFace2 weight release is such a pickle.
"""

from __future__ import annotations

import importlib
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["safe_load_pickle"]


def _numpy_attr(name: str, modules: tuple[str, ...]) -> Any:
    """Return ``name`` from the first importable numpy-internal module (numpy 1.x / 2.x)."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy provides none of {[m + '.' + name for m in modules]}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to latin1: how protocol-2 pickles from Python 3 store bytes."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(
            f"refusing _codecs.encode with encoding {encoding!r} (only latin1 is allowed)"
        )
    return text.encode("latin1")


def _allowed_globals() -> Mapping[tuple[str, str], Any]:
    """The only globals a weights pickle may reference: what numpy needs to rebuild arrays."""
    multiarray = ("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    reconstruct = _numpy_attr("_reconstruct", multiarray)
    scalar = _numpy_attr("scalar", multiarray)
    frombuffer = _numpy_attr("_frombuffer", numeric)  # protocol-5 pickles of arrays
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): OrderedDict,
    }
    # Files name numpy's internals by the module path of the numpy version that wrote them.
    for module in multiarray:
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    for module in numeric:
        allowed[(module, "_frombuffer")] = frombuffer
    return MappingProxyType(allowed)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals listed by :func:`_allowed_globals`."""

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': a weights pickle may only contain "
                "numpy arrays; this file would run other code when unpickled"
            ) from None


def _dtype_note(value: Any) -> str:
    return f"(dtype={value.dtype})" if isinstance(value, np.ndarray) else ""


def safe_load_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read a pickle of ``{name: numpy array}`` without executing code from the file.

    Args:
        path: Pickle file, e.g. the VGGFace2 ``senet50_ft_weight.pkl`` (written by Python 2,
            hence decoded with ``encoding="latin1"``).

    Returns:
        The dictionary, with ``str`` keys and ``np.ndarray`` values.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        pickle.UnpicklingError: The file references anything but numpy array machinery
            (``os.system``, ``builtins.eval``, a class...), or is not a valid pickle.
        TypeError: The top-level object is not a dict of str to (non-object) ndarray.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with path.open("rb") as f:
        try:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError:
            raise
        except Exception as e:  # truncated files etc. surface as EOFError, ValueError...
            raise pickle.UnpicklingError(f"{path}: not a readable pickle ({e})") from e
    if not isinstance(obj, dict):
        raise TypeError(f"{path}: expected a dict of name -> numpy array, got {type(obj).__name__}")
    # Object arrays hold arbitrary Python objects, never weights.
    bad = [k for k, v in obj.items()
           if not isinstance(k, str) or not isinstance(v, np.ndarray) or v.dtype.hasobject]
    if bad:
        sample = ", ".join(f"{k!r}: {type(obj[k]).__name__}{_dtype_note(obj[k])}" for k in bad[:5])
        raise TypeError(f"{path}: expected str -> numpy array entries, found {sample}")
    return dict(obj)

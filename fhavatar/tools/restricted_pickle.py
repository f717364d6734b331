"""A pickle reader that only rebuilds data: the converters' way to read third-party pickles without running them.

`pickle.load` executes whatever callable a file names. The FLAME files (`generic_model.pkl`, `FLAME_masks.pkl`,
DECA's `landmark_embedding.npy`) are pickles written with chumpy and scipy installed; this module reads them with
neither, and with no code from the file ever executed:

- NumPy arrays, dtypes and scalars are rebuilt by NumPy's own reconstruction functions (data only).
- `chumpy.*` classes become `ChumpyStandIn` objects that merely keep their pickled state; `as_array` takes the
  array out of a terminal `Ch` (its `x`).
- `scipy.sparse` CSC/CSR/COO matrices become `SparseStandIn` objects keeping `data`/`indices`/`indptr`/shape;
  `as_array` densifies them with NumPy.
- `torch.*` objects (DECA stores a few unused tensors) become inert `OpaqueStandIn` placeholders.
- Anything else (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) raises `RefusedPickleError` before it is
  looked up, let alone called.

`fhavatar.tools.network_pickle` extends this reader to EG3D/PanoHead network pickles (module stand-ins,
persistence objects, tensors) for `python -m fhavatar.tools.convert_prior`.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChumpyStandIn", "ModuleStandIn", "OpaqueStandIn", "RefusedPickleError", "SparseStandIn", "as_array",
           "load_npy", "load_pickle"]

# NumPy's reconstruction helpers, found through NumPy itself so the same code serves numpy 1.x and 2.x.
_NP_RECONSTRUCT = np.empty(0).__reduce__()[0]
_NP_SCALAR = np.float64(0).__reduce__()[0]
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
#: Python 2 module names that `fix_imports` would translate.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "object": object, "slice": slice, "complex": complex}
_SPARSE_FORMATS = ("csc", "csr", "coo")
#: Largest sparse matrix (rows x cols) `SparseStandIn.toarray` densifies (float64: 2 GiB).
MAX_DENSE_ELEMENTS = 2**28


class RefusedPickleError(pickle.UnpicklingError, ValueError):
    """The file names a Python object that is not plain data; nothing from it was executed."""


class ChumpyStandIn:
    """Inert replacement for a chumpy object: keeps the pickled state (`__dict__`), computes nothing."""

    source = "chumpy.ch.Ch"

    def __new__(cls, *args: Any, **kwargs: Any):
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state if isinstance(state, dict) else {"state": state}


class SparseStandIn:
    """Inert replacement for a `scipy.sparse` matrix (CSC, CSR or COO): keeps its arrays and shape."""

    format = "csc"

    def __new__(cls, *args: Any, **kwargs: Any):
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state if isinstance(state, dict) else {}

    def toarray(self) -> np.ndarray:  # -> [rows, cols]
        state = self.__dict__.get("_state", {})
        shape = state.get("_shape", state.get("shape"))
        if shape is None or len(shape) != 2:
            raise ValueError(f"A pickled scipy.sparse {self.format} matrix has no usable shape (got {shape!r}).")
        rows, cols = (int(s) for s in shape)
        if rows < 0 or cols < 0 or rows * cols > MAX_DENSE_ELEMENTS:
            raise ValueError(f"A pickled scipy.sparse {self.format} matrix claims shape {shape}: more than the "
                             f"{MAX_DENSE_ELEMENTS:,} entries FHAvatar densifies (FLAME's are at most a few million).")
        data = np.asarray(state.get("data"))
        dense = np.zeros((rows, cols), dtype=np.float64)
        if self.format == "coo":
            r = np.asarray(state.get("row", state.get("coords", [None, None])[0]), dtype=np.int64)
            c = np.asarray(state.get("col", state.get("coords", [None, None])[1]), dtype=np.int64)
            np.add.at(dense, (r, c), data)
            return dense
        indices = np.asarray(state.get("indices"), dtype=np.int64)
        indptr = np.asarray(state.get("indptr"), dtype=np.int64)
        major = cols if self.format == "csc" else rows
        if indptr.shape != (major + 1,) or indices.shape != data.shape:
            raise ValueError(
                f"A pickled scipy.sparse {self.format} matrix of shape {shape} is inconsistent: indptr "
                f"{list(indptr.shape)}, indices {list(indices.shape)}, data {list(data.shape)}."
            )
        majors = np.repeat(np.arange(major), np.diff(indptr))
        where = (indices, majors) if self.format == "csc" else (majors, indices)
        np.add.at(dense, where, data)
        return dense


class OpaqueStandIn:
    """Inert placeholder for objects FHAvatar never reads (e.g. torch tensors in DECA's landmark file)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> OpaqueStandIn:
        return OpaqueStandIn()

    def __setstate__(self, state: Any) -> None:
        pass


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` as Python 3 writes bytes into protocol-2 pickles (latin-1 text only)."""
    if not isinstance(text, str) or codecs.lookup(encoding).name not in ("iso8859-1", "latin-1", "utf-8"):
        raise RefusedPickleError(f"The file asks for an unexpected text codec ({encoding!r}).")
    return text.encode(encoding)


def _reconstructor(cls: type, base: type, state: Any = None) -> Any:
    """`copyreg._reconstructor` limited to the stand-in classes (protocol 0/1 pickles of objects)."""
    if isinstance(cls, type) and issubclass(cls, (ChumpyStandIn, SparseStandIn, OpaqueStandIn, ModuleStandIn)):
        return cls.__new__(cls)
    raise RefusedPickleError(f"The file tries to load a non-data object (reconstruct {cls!r}).")


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, source: str, allow_opaque: bool):
        super().__init__(file, encoding="latin1")
        self._source = source
        self._allow_opaque = allow_opaque
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return _NP_RECONSTRUCT
        if module in _NUMPY_MODULES and name == "scalar":
            return _NP_SCALAR
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "builtins" and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module == "_codecs" and name == "encode":
            return _codecs_encode
        if module == "copyreg" and name == "_reconstructor":
            return _reconstructor
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "chumpy" or module.startswith("chumpy."):
            return self._stand_in(ChumpyStandIn, module, name, {})
        if module == "scipy.sparse" or module.startswith("scipy.sparse."):
            fmt = name.split("_")[0]
            if name.endswith(("_matrix", "_array")) and fmt in _SPARSE_FORMATS:
                return self._stand_in(SparseStandIn, module, name, {"format": fmt})
        if self._allow_opaque and (module == "torch" or module.startswith("torch.")):
            return OpaqueStandIn
        raise RefusedPickleError(
            f"{self._source} tries to load a non-data object `{module}.{name}`; refusing it. FHAvatar only reads "
            "arrays from these files and never runs code from them. Is this the official file?"
        )

    def _stand_in(self, base: type, module: str, name: str, extra: dict) -> type:
        key = (module, name)
        if key not in self._stand_ins:
            self._stand_ins[key] = type(name, (base,), {"source": f"{module}.{name}", **extra})
        return self._stand_ins[key]


def load_pickle(data: bytes, source: str = "the file", allow_opaque: bool = False) -> Any:
    """Unpickle `data` (bytes of a Python 2 or 3 pickle) allowing only data objects (module docstring).

    Raises `RefusedPickleError` for code and `ValueError` for anything that is not a readable pickle.
    """
    try:
        return _Unpickler(io.BytesIO(data), source, allow_opaque).load()
    except (RefusedPickleError, ValueError):
        raise
    except (pickle.UnpicklingError, EOFError, IndexError, KeyError, TypeError, AttributeError, OverflowError,
            MemoryError, RecursionError) as err:
        raise ValueError(f"{source} is not a readable pickle ({type(err).__name__}: {err}).") from err


def load_npy(path: str | Path, allow_opaque: bool = True) -> np.ndarray:
    """Read a `.npy` file; object arrays (pickled payloads) go through the restricted unpickler."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject:
            array = load_pickle(f.read(), source=str(path), allow_opaque=allow_opaque)
            if not isinstance(array, np.ndarray):
                raise ValueError(f"{path}: expected a pickled NumPy array, found {type(array).__name__}.")
            return array
    return np.load(path, allow_pickle=False)


def as_array(value: Any, name: str = "value") -> np.ndarray:
    """The array held by `value`: an ndarray, a chumpy stand-in (its `x`) or a sparse stand-in (densified)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, SparseStandIn):
        return value.toarray()
    if isinstance(value, ChumpyStandIn):
        state = value.__dict__.get("_state", {})
        if "x" in state:
            return as_array(state["x"], name)
        raise ValueError(
            f"`{name}` is a chumpy `{value.source}` expression, not a stored array (state keys: "
            f"{sorted(state)}); only terminal chumpy arrays can be read without chumpy."
        )
    if isinstance(value, (list, tuple, int, float)):
        return np.asarray(value)
    raise ValueError(f"`{name}` holds a {type(value).__name__}, expected an array.")


class ModuleStandIn:
    """Inert replacement for a pickled `torch.nn.Module` (or any class of the official network code).

    It keeps the pickled state (for a module: its `__dict__` with `_parameters`, `_buffers`, `_modules`, ...) in
    `state` and the arguments it was called with, if any, in `args`; it has no behaviour.
    """

    source = "torch.nn.Module"

    def __new__(cls, *args: Any, **kwargs: Any):
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["args"] = args
        self.__dict__["kwargs"] = kwargs

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state if isinstance(state, dict) else {"state": state}

    @property
    def state(self) -> dict:
        """The pickled `__dict__` (empty when the file gave none)."""
        return self.__dict__.setdefault("_state", {})

    @property
    def class_name(self) -> str:
        return self.source.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<stand-in for {self.source}>"

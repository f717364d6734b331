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

`load_network_pickle` (the PanoHead/EG3D converters' reader, `fhavatar/prior/convert.py`) adds, still without
running anything from the file:

- EG3D "persistence" objects. `torch_utils.persistence.persistent_class` pickles an instance as a call
  `_reconstruct_persistent_obj(meta)` with `meta = {type: 'class', version: 6, module_src: <the source code of the
  class's whole module>, class_name, state: <the nn.Module __dict__>}`; unpickling it normally `exec`s
  `module_src`. Here it becomes a `PersistentStandIn` that keeps `class_name`, `module_src` (as an inert string)
  and `state` (`_parameters`, `_buffers`, `_modules`, `_init_args`, `_init_kwargs`, plain attributes).
- Classes pickled by reference (`torch.nn.Sequential`, `torch.nn.Softplus`, undecorated classes of the official
  `training.*` / `torch_utils.*` / `dnnlib.*` / `models.*` modules) become `ModuleStandIn` subclasses that only
  store their pickled state; `dnnlib.EasyDict` becomes a plain dict subclass.
- Tensors. A plain `pickle.dump` writes a CPU tensor as `torch._utils._rebuild_tensor_v2(storage, offset, size,
  stride, requires_grad, hooks[, metadata])`, its storage as `torch.storage._load_from_bytes(blob)` where `blob`
  is a legacy (non-zip) `torch.save` of the storage: four small pickles (magic number 0x1950a86a20f9469cfc6c,
  protocol 1001, `sys_info` with the byte order, the root object = a persistent id `('storage', <type>, key,
  location, numel, view)`), the list of storage keys, then per key an int64 element count and the raw bytes.
  The blob is parsed here (a nested unpickler that only knows storage types) and tensors are views of a buffer
  built from those bytes, bounds-checked; parameters come from `torch._utils._rebuild_parameter`. Nothing calls
  `torch.load(weights_only=False)`.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChumpyStandIn", "EasyDictStandIn", "ModuleStandIn", "OpaqueStandIn", "PersistentStandIn",
           "RefusedPickleError", "SparseStandIn", "as_array", "load_network_pickle", "load_npy", "load_pickle"]

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


# ============================================================================ network pickles (PanoHead, EG3D)
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


class PersistentStandIn(ModuleStandIn):
    """An EG3D `persistence` object: its class name, pickled state and (never executed) module source."""

    source = "torch_utils.persistence.persistent_class"

    def __init__(self, meta: dict) -> None:
        super().__init__()
        state = meta["state"] if isinstance(meta["state"], dict) else {}
        self.__dict__.update(_state=dict(state), _class_name=str(meta["class_name"]), module_src=meta["module_src"],
                             version=meta["version"])

    @property
    def class_name(self) -> str:
        return self.__dict__["_class_name"]

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()) or ())

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}) or {})

    def __repr__(self) -> str:
        return f"<persistent {self.class_name} (source not executed)>"


class EasyDictStandIn(dict):
    """`dnnlib.EasyDict` (a dict with attribute access) as a plain dict."""

    def __setstate__(self, state: Any) -> None:
        pass


class _TypeMarker:
    """Stands for `torch.Tensor` / `torch.nn.Parameter` where the file names the type; cannot be called."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RefusedPickleError(f"The file tries to call `{self.name}` directly; only tensor rebuilding is allowed.")


_TENSOR_TYPES = {("torch", "Tensor"): _TypeMarker("torch.Tensor"),
                 ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.Parameter")}
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "UntypedStorage": "uint8",
}
_TORCH_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                 "float", "double", "half", "long", "int", "short")
#: Modules whose classes may appear by reference in official network pickles; they become inert stand-ins.
NETWORK_MODULE_PREFIXES = ("torch.nn.modules.", "training.", "torch_utils.", "dnnlib.", "models.")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _StorageType:
    def __init__(self, name: str, dtype_name: str) -> None:
        self.name, self.dtype_name = name, dtype_name


class _Storage:
    """A rebuilt storage: a flat tensor of its dtype holding the file's bytes."""

    def __init__(self, flat) -> None:
        self.flat = flat  # [numel]


class _StorageUnpickler(pickle.Unpickler):
    """Reads the small pickles of a legacy `torch.save(storage)` blob: storage types and persistent ids only."""

    def __init__(self, file, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source
        self.pending: dict[str, tuple[_StorageType, int]] = {}
        self.root: tuple | None = None

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise RefusedPickleError(
            f"{self._source}: a tensor storage blob names `{module}.{name}`, which is not a storage type; refusing it."
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise RefusedPickleError(f"{self._source}: unexpected persistent id in a tensor storage blob: {pid!r}.")
        _, storage_type, key, _location, numel, view = pid
        self.pending[str(key)] = (storage_type, int(numel))
        self.root = (str(key), view)
        return self.root


def _torch():
    import torch  # deferred: the FLAME readers must not need torch

    return torch


def _load_storage_bytes(blob: bytes, source: str) -> _Storage:
    """Parse a legacy `torch.save(storage)` blob (module docstring) into a `_Storage`, without `torch.load`."""
    torch = _torch()
    f = io.BytesIO(blob)
    header = _StorageUnpickler(f, source)
    if header.load() != _LEGACY_MAGIC or header.load() != _LEGACY_PROTOCOL:
        raise ValueError(f"{source}: a tensor storage blob is not in PyTorch's legacy format (bad magic/protocol).")
    sys_info = header.load()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    main = _StorageUnpickler(f, source)
    main.load()
    keys = main.load()
    if main.root is None or not isinstance(keys, list):
        raise ValueError(f"{source}: a tensor storage blob holds no storage.")
    flats = {}
    for key in keys:
        if str(key) not in main.pending:
            raise ValueError(f"{source}: a tensor storage blob lists an unknown storage key {key!r}.")
        storage_type, numel = main.pending[str(key)]
        dtype = getattr(torch, storage_type.dtype_name)
        size_bytes = f.read(8)
        if len(size_bytes) != 8:
            raise ValueError(f"{source}: a tensor storage blob is truncated.")
        count = int.from_bytes(size_bytes, "little" if little else "big", signed=True)
        itemsize = torch.empty((), dtype=dtype).element_size()
        raw = f.read(count * itemsize)
        if count < 0 or len(raw) != count * itemsize:
            raise ValueError(f"{source}: a tensor storage blob is truncated ({len(raw)} of {count * itemsize} bytes).")
        if count != numel:
            raise ValueError(f"{source}: a tensor storage blob announces {numel} elements but holds {count}.")
        flat = torch.frombuffer(bytearray(raw), dtype=dtype) if count else torch.empty(0, dtype=dtype)
        if not little and itemsize > 1:
            flat = flat.view(torch.uint8).view(-1, itemsize).flip(-1).reshape(-1).view(dtype)
        flats[str(key)] = flat
    key, view = main.root
    flat = flats[key]
    if view is not None:  # (view key, offset, size): a storage view, from very old files
        _, offset, size = view
        flat = flat[int(offset): int(offset) + int(size)]
    return _Storage(flat)


def _rebuild_tensor_v2(storage: Any, offset: int, size: tuple, stride: tuple, requires_grad: bool = False,
                       backward_hooks: Any = None, metadata: Any = None):
    """`torch._utils._rebuild_tensor_v2` over a `_Storage`, with explicit bounds checks."""
    if not isinstance(storage, _Storage):
        raise RefusedPickleError(f"A tensor is rebuilt from a non-storage object ({type(storage).__name__}).")
    if metadata:
        raise ValueError(f"Tensors with metadata {metadata!r} (conjugate/negative views) are not supported.")
    size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise ValueError(f"A tensor has an invalid layout: size {size}, stride {stride}, offset {offset}.")
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    if extent > storage.flat.numel():
        raise ValueError(
            f"A tensor (size {size}, stride {stride}, offset {offset}) reaches past its storage of "
            f"{storage.flat.numel()} elements; the file is corrupt."
        )
    tensor = storage.flat.as_strided(size, stride, offset)
    tensor.requires_grad_(bool(requires_grad) and tensor.is_floating_point())
    return tensor


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any = None, state: Any = None):
    """`torch._utils._rebuild_parameter(_with_state)`: a Parameter around the rebuilt tensor (hooks dropped)."""
    torch = _torch()
    if not isinstance(data, torch.Tensor):
        raise RefusedPickleError(f"A parameter wraps a non-tensor ({type(data).__name__}).")
    return torch.nn.Parameter(data.detach(), requires_grad=bool(requires_grad) and data.is_floating_point())


def _rebuild_from_type_v2(func: Any, new_type: Any, args: tuple, state: Any = None):
    """`torch._tensor._rebuild_from_type_v2` restricted to plain tensors and parameters."""
    if func not in (_rebuild_tensor_v2, _rebuild_parameter) or not isinstance(new_type, _TypeMarker):
        raise RefusedPickleError("The file rebuilds a tensor subclass or with a foreign function; refusing it.")
    return func(*args)


class _NetworkUnpickler(_Unpickler):
    def __init__(self, file, source: str, module_prefixes: tuple[str, ...]):
        super().__init__(file, source, allow_opaque=False)
        self._prefixes = module_prefixes
        self._persistent: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return _rebuild_from_type_v2
        if module == "torch.storage" and name == "_load_from_bytes":
            return lambda blob: _load_storage_bytes(blob, self._source)
        if (module, name) in _TENSOR_TYPES:
            return _TENSOR_TYPES[(module, name)]
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(_torch(), name)  # a dtype object: data, not callable
        if module == "torch" and name == "Size":
            return tuple
        if module == "torch_utils.persistence" and name == "_reconstruct_persistent_obj":
            return self._reconstruct_persistent
        if module in ("dnnlib", "dnnlib.util") and name == "EasyDict":
            return EasyDictStandIn
        if module.startswith(self._prefixes):
            return self._stand_in(ModuleStandIn, module, name, {})
        try:
            return super().find_class(module, name)
        except RefusedPickleError:
            raise RefusedPickleError(
                f"{self._source} tries to load `{module}.{name}`, which is neither data, a tensor nor a class of the "
                "official network code; refusing it. FHAvatar never runs code from checkpoint files."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickleError(f"{self._source} holds an unexpected persistent id {pid!r}; refusing it.")

    def _reconstruct_persistent(self, meta: Any) -> PersistentStandIn:
        """`_reconstruct_persistent_obj`, minus the `exec` of `meta['module_src']`."""
        keys = {"type", "version", "module_src", "class_name", "state"}
        if not isinstance(meta, dict) or not keys <= set(meta) or meta["type"] != "class":
            raise ValueError(f"{self._source}: a persistent object has malformed metadata (keys {sorted(meta)}).")
        name = str(meta["class_name"])
        if name not in self._persistent:
            self._persistent[name] = type(name, (PersistentStandIn,), {"source": f"persistent {name}"})
        return self._persistent[name](meta)


def load_network_pickle(data: bytes, source: str = "the file",
                        module_prefixes: tuple[str, ...] = NETWORK_MODULE_PREFIXES) -> Any:
    """Unpickle an EG3D/PanoHead network pickle (e.g. `{'G_ema': ..., 'D': ...}`) into stand-ins and real tensors.

    Nothing from the file is executed: persistence objects keep their source as a string, classes become inert
    stand-ins and tensors are rebuilt from raw bytes (module docstring). Any other global raises
    `RefusedPickleError` naming it.
    """
    return _NetworkUnpickler(io.BytesIO(data), source, tuple(module_prefixes)).load()


def is_legacy_torch_file(data: bytes) -> bool:
    """Whether `data` is a legacy (non-zip) `torch.save` file: its first pickle is the legacy magic number."""
    try:
        return _StorageUnpickler(io.BytesIO(data[:64]), "the file").load() == _LEGACY_MAGIC
    except Exception:  # not a pickle of a number: some other file
        return False

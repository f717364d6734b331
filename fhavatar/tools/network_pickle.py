"""The restricted reader (`fhavatar.tools.restricted_pickle`) extended to EG3D/PanoHead network pickles.

`load_network_pickle` (the reader of `python -m fhavatar.tools.convert_prior`) adds, still without running
anything from the file:

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

import io
import pickle
from typing import Any

import torch

from .restricted_pickle import ModuleStandIn, RefusedPickleError, _Unpickler

__all__ = ["EasyDictStandIn", "NETWORK_MODULE_PREFIXES", "PersistentStandIn", "is_legacy_torch_file",
           "load_network_pickle"]


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


def _load_storage_bytes(blob: bytes, source: str) -> _Storage:
    """Parse a legacy `torch.save(storage)` blob (module docstring) into a `_Storage`, without `torch.load`."""
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
            return getattr(torch, name)  # a dtype object: data, not callable
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

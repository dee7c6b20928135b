"""Layers outside the other families: Parameter (a learned blob as a top) and Python
(user code, run the way Caffe's PythonLayer runs it; see the lowering notes below)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from netdef.layers.families._util import fail
from netdef.layers.registry import (LayerDef, LayerMemory, MemoryContext, Shape, ShapeContext,
                                    register)

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


@register
class Parameter(LayerDef):
    """Exposes one learnable blob of ``parameter_param.shape`` as its top."""

    type = "Parameter"
    param_field = "parameter_param"
    bottoms = (0, 0)
    tops = (1, 1)
    category = "other"

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        return [tuple(int(d) for d in layer.parameter_param.shape.dim)]

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        return self.params(layer, bottoms)

    def summary(self, layer: "LayerParameter") -> str:
        return "×".join(map(str, layer.parameter_param.shape.dim))

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        return _define()["ParameterModule"](ctx.blobs)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """The top is the learnable blob itself: no activation memory."""
        return LayerMemory(param_tops=True)


@register
class Python(LayerDef):
    """User code (``python_param.module``/``layer``): its shapes cannot be known statically.

    Tops get their shapes from ``ctx.input_shapes`` (``--input-shape``); FLOPs are 0.
    """

    type = "Python"
    param_field = "python_param"
    category = "other"

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        missing = [t for t in layer.top if t not in ctx.input_shapes]
        if missing:
            p = layer.python_param
            raise fail(layer, f"cannot infer the shape of top '{missing[0]}' of Python layer "
                              f"{p.module}.{p.layer}",
                       hint=f"pass --input-shape {missing[0]}=N,C,H,W")
        return [tuple(ctx.input_shapes[t]) for t in layer.top]

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.python_param
        return f"{p.module}.{p.layer}"

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        """Import and set up the user's layer now (Caffe does at net init)."""
        from netdef.errors import NetdefError
        from netdef.ir.schema import loc_of

        p = layer.python_param
        cls = import_python_layer(layer)
        label = f"{p.module}.{p.layer}"
        try:
            obj = _instantiate(cls, layer)
            obj.param_str = p.param_str
            obj.phase = 0 if ctx.phase == "TRAIN" else 1
            return _define()["PythonLayerModule"](obj, ctx.info.bottom_shapes,
                                                  ctx.info.top_shapes, label)
        except NetdefError:
            raise
        except Exception as e:  # whatever the user's constructor or setup raises
            raise NetdefError(f"layer '{layer.name}' (Python {label}): setup failed: "
                              f"{type(e).__name__}: {e}", loc=loc_of(layer)) from e


# --- lowering -------------------------------------------------------------------------
#
# Parameter returns its blob.  Python runs the user's layer the way Caffe's PythonLayer
# does, on CPU numpy arrays:
#
# * the module ``python_param.module`` is imported with the net file's folder and the
#   working directory on ``sys.path`` (Caffe users put them on PYTHONPATH); when pycaffe
#   itself is not installed, a small stand-in ``caffe`` module (``caffe.Layer``,
#   ``caffe.TRAIN``/``caffe.TEST``) is registered so ``import caffe`` in layer files works;
# * the class ``python_param.layer`` is instantiated with the LayerParameter (as Caffe
#   does; a class whose constructor takes no argument is called without it), gets
#   ``param_str`` and ``phase`` (0 TRAIN, 1 TEST), then ``setup(bottom, top)`` once at
#   lowering, with bottoms of the analysed shapes (zeros) like Caffe's net init;
# * each forward calls ``reshape(bottom, top)`` then ``forward(bottom, top)``; backward
#   calls ``backward(top, propagate_down, bottom)`` with the tops' ``diff`` set to the
#   incoming gradient and the bottoms' ``diff`` zeroed.  Blobs are :class:`Blob`
#   (pycaffe's ``.data``/``.diff`` ndarrays, ``.reshape(*shape)``, ``.shape``, ``.count``,
#   ``.num``/``.channels``/``.height``/``.width``); the top blobs persist across calls,
#   like Caffe's.

_LOWERED = ("ParameterModule", "PythonLayerModule")
_CLASSES: dict[str, type] = {}


class Blob:
    """A CPU stand-in for pycaffe's ``caffe.Blob``: float32 ``data`` and ``diff`` arrays."""

    def __init__(self, shape: Sequence[int] = (), data: Any = None) -> None:
        import numpy as np

        if data is not None:
            self._data = np.array(data, dtype=np.float32, copy=True)
        else:
            self._data = np.zeros(tuple(int(d) for d in shape), dtype=np.float32)
        self._diff = np.zeros_like(self._data)

    @property
    def data(self) -> Any:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data[...] = value

    @property
    def diff(self) -> Any:
        return self._diff

    @diff.setter
    def diff(self, value: Any) -> None:
        self._diff[...] = value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def count(self) -> int:
        return int(self._data.size)

    def _legacy(self, i: int) -> int:
        shape = self.shape
        if len(shape) > 4:
            raise ValueError("num/channels/height/width need a blob of at most 4 axes")
        return shape[i] if i < len(shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape: Any) -> None:
        """pycaffe's ``blob.reshape(n, c, h, w)`` (a single sequence is accepted too).

        Keeps the values when the count is unchanged (as Caffe keeps its memory)."""
        import numpy as np

        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise ValueError(f"negative dimension in {dims}")
        if dims == self.shape:
            return
        if int(np.prod(dims, dtype=np.int64)) == self.count:
            self._data = self._data.reshape(dims)
            self._diff = self._diff.reshape(dims)
        else:
            self._data = np.zeros(dims, dtype=np.float32)
            self._diff = np.zeros(dims, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Blob(shape={self.shape})"


class PycaffeLayer:
    """The stand-in for ``caffe.Layer`` when pycaffe is not installed."""

    def __init__(self, param: Any = None) -> None:
        self.blobs: list[Blob] = []
        self.param_str = ""
        self.phase = 0

    def setup(self, bottom: list[Blob], top: list[Blob]) -> None:
        pass

    def reshape(self, bottom: list[Blob], top: list[Blob]) -> None:
        pass

    def forward(self, bottom: list[Blob], top: list[Blob]) -> None:
        pass

    def backward(self, top: list[Blob], propagate_down: list[bool],
                 bottom: list[Blob]) -> None:
        pass


def _ensure_caffe_module() -> None:
    """Register the stand-in ``caffe`` module unless a real one can be imported."""
    import importlib.util
    import sys
    import types

    if "caffe" in sys.modules:
        return
    try:
        if importlib.util.find_spec("caffe") is not None:
            return
    except (ImportError, ValueError):
        pass
    mod = types.ModuleType("caffe", "netdef's stand-in for pycaffe (Python layers only)")
    mod.Layer = PycaffeLayer  # type: ignore[attr-defined]
    mod.Blob = Blob  # type: ignore[attr-defined]
    mod.TRAIN, mod.TEST = 0, 1  # type: ignore[attr-defined]
    mod.__netdef_stub__ = True  # type: ignore[attr-defined]
    sys.modules["caffe"] = mod


def _search_dirs(layer: "LayerParameter") -> list[str]:
    """The net file's folder (when it came from a file) and the working directory."""
    import os

    from netdef.ir.schema import loc_of

    dirs = []
    loc = loc_of(layer)
    if loc is not None and loc.file:
        dirs.append(os.path.dirname(os.path.abspath(loc.file)))
    dirs.append(os.getcwd())
    return list(dict.fromkeys(dirs))


def import_python_layer(layer: "LayerParameter") -> type:
    """The user's layer class named by ``python_param`` (a NetdefError with a hint if not)."""
    import importlib
    import sys

    from netdef.errors import NetdefError
    from netdef.ir.schema import loc_of

    p = layer.python_param
    who = f"layer '{layer.name}' (Python)"
    if not p.module or not p.layer:
        raise NetdefError(f"{who}: python_param needs both 'module' and 'layer'",
                          loc=loc_of(layer),
                          hint='python_param { module: "my_layers" layer: "MyLayer" }')
    dirs = _search_dirs(layer)
    _ensure_caffe_module()
    added = [d for d in dirs if d not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(p.module)
    except ModuleNotFoundError as e:
        top = p.module.split(".")[0]
        if e.name in (p.module, top) or (e.name and p.module.startswith(e.name + ".")):
            raise NetdefError(f"{who}: cannot import module '{p.module}'", loc=loc_of(layer),
                              hint=f"put {top}.py beside the net file or in the working "
                                   f"directory, or add its folder to PYTHONPATH "
                                   f"(searched: {', '.join(dirs)})") from None
        raise NetdefError(f"{who}: importing '{p.module}' failed: {e}", loc=loc_of(layer),
                          hint=f"install the module '{e.name}' the layer file imports") from None
    except Exception as e:  # SyntaxError, errors raised by the user's module code
        raise NetdefError(f"{who}: importing '{p.module}' failed: {type(e).__name__}: {e}",
                          loc=loc_of(layer)) from None
    finally:
        # keep the folders importable for lazy imports, but behind everything else
        for d in added:
            if d in sys.path:
                sys.path.remove(d)
                sys.path.append(d)
    cls = getattr(module, p.layer, None)
    if cls is None or not callable(cls):
        classes = sorted(n for n, v in vars(module).items()
                         if isinstance(v, type) and getattr(v, "__module__", "") == module.__name__)
        where = getattr(module, "__file__", None) or p.module
        raise NetdefError(f"{who}: module '{p.module}' ({where}) has no class '{p.layer}'",
                          loc=loc_of(layer),
                          hint=("classes defined there: " + ", ".join(classes)) if classes
                          else "check python_param.layer")
    return cls


def _instantiate(cls: type, layer: "LayerParameter") -> Any:
    """``cls(param)`` as Caffe's layer factory calls it; ``cls()`` if it takes no argument."""
    import inspect

    try:
        inspect.signature(cls).bind(layer)
    except TypeError:
        return cls()
    except ValueError:  # no signature (builtins): try Caffe's way
        pass
    return cls(layer)


def _define() -> dict[str, type]:
    if _CLASSES:
        return _CLASSES
    import numpy as np
    import torch

    from netdef.lowering.module import LayerModule

    class ParameterModule(LayerModule):
        """Caffe's ParameterLayer: its one learnable blob is its top."""

        def forward(self) -> torch.Tensor:
            return self.blob(0)

    class _PythonFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, mod: Any, *bottoms: torch.Tensor) -> Any:
            bottom = [Blob(data=b.detach().cpu().numpy()) for b in bottoms]
            tops = mod.run_forward(bottom)
            device = bottoms[0].device if bottoms else torch.device("cpu")
            outs = tuple(torch.from_numpy(t.data.copy()).to(device) for t in tops)
            ctx.mod, ctx.bottom = mod, bottom
            ctx.top_data = [t.data.copy() for t in tops]
            ctx.device = device
            return outs if len(outs) != 1 else outs[0]

        @staticmethod
        def backward(ctx: Any, *grads: torch.Tensor) -> Any:
            mod, bottom = ctx.mod, ctx.bottom
            for blob, data, g in zip(mod.top_blobs, ctx.top_data, grads):
                blob._data = data.copy()
                blob._diff = (np.zeros_like(data) if g is None else
                              np.ascontiguousarray(g.detach().cpu().numpy(), dtype=np.float32)
                              .reshape(data.shape).copy())
            for b in bottom:
                b._diff = np.zeros_like(b._data)
            need = [bool(n) for n in ctx.needs_input_grad[1:]]
            mod.user_layer.backward(mod.top_blobs, need, bottom)
            return (None, *(torch.from_numpy(b.diff.astype(np.float32, copy=True))
                            .reshape(b.shape).to(ctx.device) if n else None
                            for b, n in zip(bottom, need)))

    class PythonLayerModule(LayerModule):
        """A user's Python layer run the Caffe way (see the notes above this class)."""

        def __init__(self, user_layer: Any, bottom_shapes: Sequence[Shape],
                     top_shapes: Sequence[Shape], label: str) -> None:
            super().__init__()
            self.user_layer = user_layer
            self.top_blobs = [Blob(s) for s in top_shapes]
            self.label = label
            self._setup([Blob(s) for s in bottom_shapes])

        def _setup(self, bottom: list[Blob]) -> None:
            self.user_layer.setup(bottom, self.top_blobs)

        def run_forward(self, bottom: list[Blob]) -> list[Blob]:
            self.user_layer.reshape(bottom, self.top_blobs)
            self.user_layer.forward(bottom, self.top_blobs)
            return self.top_blobs

        def forward(self, *bottoms: torch.Tensor) -> Any:
            if not self.top_blobs:  # nothing comes out: no autograd node either
                self.run_forward([Blob(data=b.detach().cpu().numpy()) for b in bottoms])
                return ()
            return _PythonFunction.apply(self, *bottoms)

        def extra_repr(self) -> str:
            return self.label

    for cls in (ParameterModule, PythonLayerModule):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
        _CLASSES[cls.__name__] = cls
    _CLASSES["_PythonFunction"] = _PythonFunction
    return _CLASSES


def __getattr__(name: str):  # PEP 562: pickle finds the lazily defined classes here
    if name in _LOWERED:
        return _define()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

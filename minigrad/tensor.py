"""Tensor and reverse-mode automatic differentiation.

A ``Tensor`` wraps an array (``data``, NumPy or CuPy) and remembers the ``Function`` that made it.
Calling ``backward()`` on a result walks that graph from the output back to the leaves in reverse
topological order, asking each Function for the gradients of its inputs (the chain rule), adding
up the gradients of tensors used more than once, and storing ``.grad`` on the leaves.

The sort is iterative, so a chain of any length backpropagates without hitting Python's recursion
limit; each node's saved arrays are released as soon as its backward has run.
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Any, Iterator, Sequence

from minigrad import backend, profiler

_grad_enabled = True


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, operations record no graph (inference, optimizer updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def sum_to_shape(grad, shape: tuple[int, ...]):
    """Undo broadcasting: sum ``grad`` over the axes along which an input of ``shape`` was stretched."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    stretched = tuple(i + extra for i, size in enumerate(shape) if size == 1 and grad.shape[i + extra] != 1)
    grad = grad.sum(axis=tuple(range(extra)) + stretched, keepdims=True)
    return grad.reshape(shape)


class Function:
    """One differentiable operation: ``forward`` and ``backward`` on raw arrays.

    Subclasses take their non-tensor settings (axes, shapes, probabilities) in ``__init__`` and
    implement ``forward(*arrays)`` and ``backward(grad_output)``; backward returns one gradient per
    input, or None where an input needs none. ``self.needs_input_grad`` says which inputs do (all
    False under ``no_grad``: no backward follows, and ``forward`` need keep nothing for one).
    Gradients may keep a broadcast shape: the engine sums them back to each input's shape.
    """

    needs_input_grad: tuple[bool, ...] = ()
    grad_targets: tuple[Any, ...] = ()  # set by Tensor.backward() for grad_target()

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    def grad_target(self, index: int, dtype: Any) -> Any:
        """An array backward may write input ``index``'s gradient into (``out=``) and return, or
        None: the packed gradient of a parameter (optim/flat.py) that gets no other gradient in
        this backward pass. Writing there saves the copy its leaf would otherwise make."""
        target = self.grad_targets[index] if index < len(self.grad_targets) else None
        return target if target is not None and target.dtype == dtype else None

    @classmethod
    def apply(cls, *inputs: Any, **settings: Any) -> "Tensor":
        """Run the op on ``inputs`` (tensors, arrays or Python numbers) and record it in the graph.

        Numbers and None pass through to ``forward`` as Python values (so float32 stays float32,
        and a NumPy scalar such as ``np.float32(2)`` meets a GPU array as the number it is).
        """
        function = cls(**settings)
        tensors = [_python_value(x) if _is_constant(x) else x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
        arrays = [x.data if isinstance(x, Tensor) else x for x in tensors]
        device = backend.check_same_device([x.data for x in tensors if isinstance(x, Tensor)])
        needs = tuple(_grad_enabled and isinstance(x, Tensor) and x.requires_grad for x in tensors)
        record = any(needs)
        function.needs_input_grad = needs
        result = profiler.measured(cls.__name__, "forward", function.forward, *arrays, device=device)
        output = Tensor(result, requires_grad=record)
        if record:
            function.inputs = [_node_of(x) for x in tensors]
            function.output_shape = result.shape
            output._creator = function
        return output


def _node_of(value: Any) -> Any:
    """What the graph keeps of an input: the Function that made it (a tensor computed with grad),
    the tensor itself (a leaf that requires grad, where its gradient goes), or None (nothing to
    route a gradient to). Never a computed tensor's array: backward needs only what each Function
    saved, so a tensor that only led to the next op is freed when the forward pass lets go of it."""
    if not isinstance(value, Tensor) or not value.requires_grad:
        return None
    return value._creator if value._creator is not None else value


def _is_constant(value: Any) -> bool:
    return value is None or isinstance(value, numbers.Number)  # NumPy registers its scalar types here


def _python_value(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class Tensor:
    """An array with an optional gradient and the record of how it was computed."""

    __array_priority__ = 1000  # ``ndarray * tensor`` defers to Tensor.__rmul__
    __hash__ = object.__hash__
    # Where backward writes this leaf's gradient: a view into an optimizer's flat buffer
    # (optim/flat.py), or None for a fresh array.
    _grad_storage = None

    def __init__(self, data: Any, requires_grad: bool = False, device: str | None = None, dtype: Any = None):
        if isinstance(data, Tensor):
            data = data.data
        # NumPy's float64 scalar (what a full reduction returns) subclasses float: it keeps its dtype.
        from_python = isinstance(data, (int, float, bool, list, tuple)) and not hasattr(data, "dtype")
        if device is None:
            device = backend.get_default_device() if from_python else backend.device_of(data)
        xp = backend.array_module_for(device)
        data = backend.to_device(data, device)
        if dtype is None and from_python:
            dtype = xp.float32
        if dtype is not None and data.dtype != dtype:
            data = data.astype(dtype)
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._creator: Function | None = None

    # ---- what it is

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._creator is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}, device='{self.device}'{grad})"

    # ---- leaving the graph, leaving the device

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def numpy(self):
        """A host NumPy copy of the data."""
        return backend.host_copy(self.data)

    def item(self) -> float:
        return self.data.item()

    def to(self, device: str) -> "Tensor":
        """This tensor on ``device`` (itself if already there); gradients flow back across."""
        if backend.normalize_device(device) == self.device:
            return self
        return ToDevice.apply(self, device=device)

    # ---- backpropagation

    def backward(self, grad: Any = None) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the gradient of some scalar with respect to this tensor; it may be left out
        only when this tensor holds a single element.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of its computation has requires_grad=True")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without grad needs a single-element tensor, not shape "
                                   f"{self.shape}: reduce it first (e.g. .sum()) or pass grad=")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            if not hasattr(grad, "shape"):
                raise TypeError(f"grad must be a tensor or an array of shape {self.shape} on '{self.device}', "
                                f"got {type(grad).__name__}")
            backend.check_same_device([grad, self.data])
            if grad.shape != self.shape:
                raise ValueError(f"grad has shape {grad.shape}, but the tensor has shape {self.shape}")
        root = self._creator if self._creator is not None else self
        grads = {id(root): grad}
        order, uses = _topological_order(root)
        for node in order:
            grad = grads.pop(id(node), None)
            if isinstance(node, Tensor):  # a leaf
                if grad is not None:
                    profiler.measured("AccumulateGrad", "backward", node._accumulate_grad, grad)
                continue
            if grad is None:  # every use of its tensor had a zero (None) gradient
                if hasattr(node, "inputs"):
                    _release(node)
                continue
            if not hasattr(node, "inputs"):
                raise RuntimeError("backward() through a graph a second time: its saved arrays were "
                                   "released after the first backward; recompute the forward pass")
            node.grad_targets = tuple(_grad_target(parent, uses) for parent in node.inputs)
            input_grads = profiler.measured(type(node).__name__, "backward", node.backward, grad)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, grad_in in zip(node.inputs, input_grads):
                if grad_in is None or parent is None:
                    continue
                grad_in = sum_to_shape(grad_in, parent.shape if isinstance(parent, Tensor) else parent.output_shape)
                key = id(parent)
                grads[key] = grad_in if key not in grads else grads[key] + grad_in
            _release(node)

    def _accumulate_grad(self, grad) -> None:
        """Add ``grad`` to this leaf's ``.grad``. Always into an array of the leaf's own: ``grad``
        may be shared (another leaf, the caller's grad) or a read-only broadcast view, and
        optimizers update .grad in place."""
        storage = self._grad_storage
        if self.grad is None and grad is storage:  # a backward wrote it there (grad_target)
            self.grad = storage
        elif self.grad is None and storage is not None and storage.dtype == grad.dtype \
                and backend.device_of(storage) == backend.device_of(grad):
            storage[...] = grad
            self.grad = storage
        elif self.grad is None:
            self.grad = grad.copy()
        elif self.grad is storage:
            storage += grad
        else:
            self.grad = self.grad + grad

    # ---- operators (implemented in minigrad.functional)

    def __add__(self, other): return F.add(self, other)
    def __radd__(self, other): return F.add(other, self)
    def __sub__(self, other): return F.sub(self, other)
    def __rsub__(self, other): return F.sub(other, self)
    def __mul__(self, other): return F.mul(self, other)
    def __rmul__(self, other): return F.mul(other, self)
    def __truediv__(self, other): return F.div(self, other)
    def __rtruediv__(self, other): return F.div(other, self)
    def __pow__(self, other): return F.pow(self, other)
    def __rpow__(self, other): return F.pow(other, self)
    def __matmul__(self, other): return F.matmul(self, other)
    def __rmatmul__(self, other): return F.matmul(other, self)
    def __neg__(self): return F.neg(self)
    def __getitem__(self, index): return F.getitem(self, index)

    # Comparisons give boolean tensors outside the graph, for masks.
    def __lt__(self, other): return Tensor(self.data < data_of(other))
    def __le__(self, other): return Tensor(self.data <= data_of(other))
    def __gt__(self, other): return Tensor(self.data > data_of(other))
    def __ge__(self, other): return Tensor(self.data >= data_of(other))

    # ---- methods, NumPy's names and axes

    def sum(self, axis=None, keepdims=False): return F.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return F.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return F.max(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return F.var(self, axis, keepdims, ddof)
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def sqrt(self): return F.sqrt(self)
    def tanh(self): return F.tanh(self)
    def relu(self): return F.relu(self)
    def flatten(self, start_axis=0, end_axis=-1): return F.flatten(self, start_axis, end_axis)
    def broadcast_to(self, shape): return F.broadcast_to(self, shape)
    def roll(self, shift, axis): return F.roll(self, shift, axis)
    def softmax(self, axis=-1): return F.softmax(self, axis)
    def masked_fill(self, mask, value): return F.masked_fill(self, mask, value)

    def reshape(self, *shape):
        return F.reshape(self, _shape_argument(shape))

    def transpose(self, *axes):
        return F.transpose(self, _shape_argument(axes) if axes else None)

    permute = transpose

    @property
    def T(self) -> "Tensor":
        return F.transpose(self, None)


def _shape_argument(values: Sequence) -> tuple:
    """``f(2, 3)`` and ``f((2, 3))`` both mean the tuple ``(2, 3)``."""
    if len(values) == 1 and isinstance(values[0], (tuple, list)):
        return tuple(values[0])
    return tuple(values)


def data_of(value: Any) -> Any:
    """The array inside a Tensor; anything else (an array, a number) as it is."""
    return value.data if isinstance(value, Tensor) else value


def _topological_order(root: Any) -> tuple[list[Any], dict[int, int]]:
    """The graph's nodes that lead to ``root`` (Functions, and leaf tensors that require grad),
    each before every node it was made from; and how many times each is an input of another (by id)."""
    order: list[Any] = []
    uses: dict[int, int] = {}
    expanded: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in expanded:
            continue
        expanded.add(id(node))
        stack.append((node, True))
        for parent in getattr(node, "inputs", ()):  # a leaf has none, nor a released Function
            if parent is not None:
                uses[id(parent)] = uses.get(id(parent), 0) + 1
                if id(parent) not in expanded:
                    stack.append((parent, False))
    order.reverse()
    return order, uses


def _grad_target(tensor: Any, uses: dict[int, int]) -> Any:
    """The packed gradient of a parameter that this one use will be its only gradient, if any."""
    if (isinstance(tensor, Tensor) and tensor._grad_storage is not None and tensor._creator is None
            and tensor.grad is None and tensor.requires_grad and uses.get(id(tensor)) == 1):
        return tensor._grad_storage
    return None


def _release(function: Function) -> None:
    """Drop what ``function`` saved for backward, and its inputs, so memory is freed early."""
    del function.inputs
    for name in list(vars(function)):
        if name != "needs_input_grad":
            delattr(function, name)


class ToDevice(Function):
    """Copy to another device; the gradient is copied back."""

    def __init__(self, device: str):
        self.device = device

    def forward(self, x):
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, grad):
        return backend.to_device(grad, self.source)


from minigrad import functional as F  # noqa: E402  (functional builds on Tensor and Function)

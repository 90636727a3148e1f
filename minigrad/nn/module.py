"""``Module``: a tree of layers that owns parameters, as ``torch.nn.Module``.

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it, so ``named_parameters``,
``state_dict``, ``to(device)`` and ``train()/eval()`` reach every layer without being told.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, NamedTuple

from minigrad import backend
from minigrad.tensor import Tensor, data_of


class Parameter(Tensor):
    """A tensor that is a learnable weight of a module: it requires grad."""

    def __init__(self, data: Any, requires_grad: bool = True):
        super().__init__(data_of(data), requires_grad=requires_grad)

    @classmethod
    def zeros(cls, *shape: int) -> "Parameter":
        """A float32 parameter of zeros on the default device, for an initialiser to fill."""
        xp = backend.array_module_for(backend.get_default_device())
        return cls(xp.zeros(shape, dtype=xp.float32))

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model: subclasses set attributes and define ``forward``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    # ---- registration

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, (Parameter, Module)):
            self.__dict__.pop(name, None)
            self._buffers.pop(name, None)  # as torch: a buffer's name given to a parameter is no buffer
            self._non_persistent.discard(name)
            registry = self._parameters if isinstance(value, Parameter) else self._modules
            registry[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        for registry in ("_parameters", "_modules", "_buffers"):
            found = self.__dict__.get(registry, {})
            if name in found:
                return found[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def register_buffer(self, name: str, array: Any, persistent: bool = True) -> None:
        """Keep an array that is state but not learnt (e.g. an index table): it moves with
        ``to(device)`` and, when persistent, appears in ``state_dict``."""
        self.__dict__.pop(name, None)
        self._buffers[name] = array
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    # ---- walking the tree

    def named_modules(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """This module and every descendant, depth first, each once (or, without
        ``remove_duplicate``, once under every name it is reachable by)."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate and id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module._modules.items() if child is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator["Module"]:
        return (module for _, module in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        return iter(self._modules.items())

    def children(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name, each once (shared parameters are not repeated)."""
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            for name, parameter in module._parameters.items():
                if parameter is not None and id(parameter) not in seen:
                    seen.add(id(parameter))
                    yield (f"{prefix}.{name}" if prefix else name), parameter

    def parameters(self) -> Iterator[Parameter]:
        return (parameter for _, parameter in self.named_parameters())

    def named_buffers(self, persistent_only: bool = False) -> Iterator[tuple[str, Any]]:
        for prefix, module in self.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is not None and not (persistent_only and name in module._non_persistent):
                    yield (f"{prefix}.{name}" if prefix else name), buffer

    def num_parameters(self) -> int:
        """How many learnable numbers the model holds."""
        return sum(parameter.size for parameter in self.parameters())

    # ---- modes, devices, gradients

    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def to(self, device: str | None = None, dtype: Any = None) -> "Module":
        """Move (and/or cast) every parameter, gradient and floating-point buffer, in place."""
        device = backend.normalize_device(device) if device is not None else None

        def convert(array, cast: bool):
            if device is not None:
                array = backend.to_device(array, device)
            return array.astype(dtype) if cast and dtype is not None else array

        for parameter in self.parameters():
            parameter.data = convert(parameter.data, True)
            if parameter.grad is not None:
                parameter.grad = convert(parameter.grad, True)
        for module in self.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = convert(buffer, buffer.dtype.kind == "f")
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the parameters' gradients (``set_to_none``, which frees them) or fill them with zeros."""
        for parameter in self.parameters():
            if set_to_none:
                parameter.grad = None
            elif parameter.grad is not None:
                parameter.grad[...] = 0

    # ---- state

    def _state_slots(self) -> dict[str, tuple[dict, str]]:
        """Where each state-dict entry lives: dotted key -> (registry dict, name in it).

        A module reachable by two names is keyed under both, as torch keys it (a tied decoder)."""
        slots = {}
        for prefix, module in self.named_modules(remove_duplicate=False):
            for registry in (module._parameters, module._buffers):
                for name, value in registry.items():
                    if value is not None and not (registry is module._buffers and name in module._non_persistent):
                        slots[f"{prefix}.{name}" if prefix else name] = (registry, name)
        return slots

    def state_dict(self) -> dict[str, Any]:
        """Parameters and persistent buffers as fresh host NumPy arrays, keyed as PyTorch keys them."""
        return {key: backend.host_copy(data_of(registry[name]))
                for key, (registry, name) in self._state_slots().items()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from ``state_dict`` into this model's parameters and buffers.

        Every shape must match (the error lists each key with both shapes). With ``strict``, the
        keys must match exactly too; otherwise the missing and unexpected keys are returned.
        Both are checked before anything is copied: a refused checkpoint leaves the model as it was.
        """
        slots = self._state_slots()
        missing = [key for key in slots if key not in state_dict]
        unexpected = [key for key in state_dict if key not in slots]
        mismatched = [f"  {key}: the checkpoint has shape {tuple(value.shape)}, the model "
                      f"{tuple(data_of(slots[key][0][slots[key][1]]).shape)}"
                      for key, value in state_dict.items()
                      if key in slots and tuple(value.shape) != tuple(data_of(slots[key][0][slots[key][1]]).shape)]
        if mismatched:
            raise ValueError("load_state_dict: shapes differ for these keys:\n" + "\n".join(mismatched))
        if strict and (missing or unexpected):
            raise RuntimeError("load_state_dict(strict=True): keys differ.\n"
                               f"  missing from the checkpoint: {missing or 'none'}\n"
                               f"  unexpected in the checkpoint: {unexpected or 'none'}\n"
                               "Pass strict=False to load only the keys that match.")
        for key, value in state_dict.items():
            if key not in slots:
                continue
            registry, name = slots[key]
            current = data_of(registry[name])
            array = backend.to_device(data_of(value), backend.device_of(current)).astype(current.dtype)
            if isinstance(registry[name], Parameter):
                registry[name].data = array
            else:
                registry[name] = array
        return IncompatibleKeys(missing, unexpected)

    # ---- running

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules, registered so their parameters are found; children are named by index."""

    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        self.extend(modules)

    def append(self, module: Module) -> "ModuleList":
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def _from_modules(self, modules: list[Module]) -> "ModuleList":
        return ModuleList(modules)

    def __getitem__(self, i: int | slice) -> Any:
        modules = list(self._modules.values())
        return self._from_modules(modules[i]) if isinstance(i, slice) else modules[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after the other; children are named "0", "1", ..."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def _from_modules(self, modules: list[Module]) -> "Sequential":
        return Sequential(*modules)

    def forward(self, x: Any) -> Any:
        for module in self:
            x = module(x)
        return x

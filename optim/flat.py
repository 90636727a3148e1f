"""Packing: the parameters an optimizer updates alike, in one flat array.

An optimizer's update is elementwise: the same arithmetic on every element of every parameter. On a
GPU each operation on one parameter is a kernel launch, and a Swin-T has 173 parameters, so a loop
over them costs thousands of launches a step. Packed, the parameters of one group that share a
device and a dtype live in one array, and so do their gradients and each array of optimizer state;
every parameter's ``data``, ``grad`` and state entries are views into those arrays. One pass over
each flat array then updates them all, bit for bit as the loop would.

Anything may later put an array of its own where a view was (``model.to(dtype)``,
``load_state_dict``, a gradient assigned by hand): the optimizer notices at its next step and packs
again from what the parameters and their states hold then.
"""
from __future__ import annotations

import weakref
from typing import Any, Iterable

from minigrad import backend
from minigrad.tensor import Tensor

_block_of: "weakref.WeakKeyDictionary[Tensor, FlatBlock]" = weakref.WeakKeyDictionary()


class FlatBlock:
    """Parameters of one device and dtype packed together, with their gradients and state.

    ``state`` maps each parameter to its optimizer state dict (the optimizer's own); array
    entries of the parameters' states are packed too, and a value such as the step count, the
    same for all of them, is kept once in ``shared_state``.
    """

    def __init__(self, parameters: list[Tensor], state: dict[Tensor, dict[str, Any]]) -> None:
        self.parameters = parameters
        first = parameters[0].data
        xp = backend.get_array_module(first)
        total = sum(p.size for p in parameters)
        self.data, self.grad = xp.empty(total, dtype=first.dtype), xp.empty(total, dtype=first.dtype)
        self.data_views, self.grad_views = self._views(self.data), self._views(self.grad)
        for parameter, data, grad in zip(parameters, self.data_views, self.grad_views):
            data[...] = parameter.data
            parameter.data = data
            if parameter.grad is not None:
                grad[...] = parameter.grad
                parameter.grad = grad
            parameter._grad_storage = grad  # where backward writes this leaf's gradient
            _block_of[parameter] = self
        self.states = [state.get(p) for p in parameters]  # the state dicts packed from
        self.shared_state: dict[str, Any] | None = {}  # what update() reads and writes
        self.packed: dict[str, Any] = {}  # the packed state arrays whose views the states hold
        self.state_views: dict[str, list[Any]] = {}
        self._pack_state(self.states)

    def _views(self, flat) -> list[Any]:
        views, offset = [], 0
        for parameter in self.parameters:
            views.append(flat[offset:offset + parameter.size].reshape(parameter.shape))
            offset += parameter.size
        return views

    def _pack_state(self, states: list[dict[str, Any] | None]) -> None:
        """Pack the parameters' states, when they agree: the same keys, the same step. Where they
        do not (some parameters were skipped without a gradient), ``shared_state`` is None and
        the block is stepped one parameter at a time."""
        if all(s is None for s in states):
            return
        keys = set(states[0] or ())
        if any(s is None or set(s) != keys for s in states):
            self.shared_state = None
            return
        xp = backend.get_array_module(self.data)
        for key in sorted(keys):
            values = [s[key] for s in states]
            if hasattr(values[0], "shape"):
                flat = xp.concatenate([xp.asarray(v, dtype=self.data.dtype).reshape(-1) for v in values])
                self._share(key, flat, states)
            elif any(v != values[0] for v in values):
                self.shared_state = None
                return
            else:
                self.shared_state[key] = values[0]

    def _share(self, key: str, flat, states: list[dict[str, Any]]) -> None:
        """Keep ``flat`` as the packed state ``key`` and give each parameter's state its view."""
        self.shared_state[key] = self.packed[key] = flat
        self.state_views[key] = self._views(flat)
        for state, view in zip(states, self.state_views[key]):
            state[key] = view

    def intact(self, state: dict[Tensor, dict[str, Any]]) -> bool:
        """Whether every parameter and state entry is still the view this block gave it."""
        if any(p.data is not view for p, view in zip(self.parameters, self.data_views)):
            return False
        if any(state.get(p) is not packed for p, packed in zip(self.parameters, self.states)):
            return False
        for key, views in self.state_views.items():
            if any(state.get(p, {}).get(key) is not view for p, view in zip(self.parameters, views)):
                return False
        return True

    def gradients_in_place(self) -> bool:
        """Put each gradient into the block (where it is one of the parameter's own, assigned by
        hand); False when a parameter has none, and the block cannot step as one."""
        for parameter, view in zip(self.parameters, self.grad_views):
            if parameter.grad is None:
                return False
            if parameter.grad is not view:
                view[...] = parameter.grad
                parameter.grad = view
        return True

    def after_update(self, state: dict[Tensor, dict[str, Any]]) -> None:
        """Hand what an update of the packed arrays changed back to each parameter's state: the
        step count, and views of any array the update made (its first step makes the moments)."""
        states = self.states = [state.setdefault(p, {}) for p in self.parameters]
        for key, value in self.shared_state.items():
            if not hasattr(value, "shape"):
                for parameter_state in states:
                    parameter_state[key] = value
            elif self.packed.get(key) is not value:
                self._share(key, value, states)


def packed_gradients(parameters: Iterable[Tensor]) -> list[Any]:
    """The gradients of ``parameters`` in as few arrays as packing allows: each block whose every
    parameter is among them, gradient in place, as its one flat array; the others one by one."""
    parameters = [p for p in parameters if p.grad is not None]
    chosen = {id(p) for p in parameters}
    arrays, done = [], set()
    for parameter in parameters:
        if id(parameter) in done:
            continue
        block = _block_of.get(parameter)
        if (block is not None and all(id(p) in chosen for p in block.parameters)
                and all(p.grad is view for p, view in zip(block.parameters, block.grad_views))):
            arrays.append(block.grad)
            done.update(id(p) for p in block.parameters)
        else:
            arrays.append(parameter.grad)
            done.add(id(parameter))
    return arrays

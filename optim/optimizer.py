"""``Optimizer``: parameter groups, per-parameter state, and saving both, as ``torch.optim``.

A subclass implements ``update(parameter, grad, state, group)`` on raw arrays; the base class walks
the groups, skips parameters without a gradient, negates the gradient of groups that ``maximize``,
and keeps ``state`` per parameter. Arrays stay on the parameters' device; ``state_dict`` copies
them to the host for ``minigrad.save``.

The update is elementwise, so the base class packs the parameters of a group that share a device
and a dtype into one flat array (optim/flat.py) and calls ``update`` once on it, instead of once per
parameter: a few kernel launches a step on a GPU, not thousands. A group where some parameter has
no gradient is stepped one parameter at a time, as torch skips it.
"""
from __future__ import annotations

import types
from typing import Any, Iterable

from minigrad import backend, kernels, profiler
from minigrad.nn import Parameter
from minigrad.tensor import Tensor
from optim.flat import FlatBlock


class Optimizer:
    """Takes parameters (``model.parameters()``), ``(name, parameter)`` pairs
    (``model.named_parameters()``), or groups: dicts with ``"params"`` and their own settings."""

    def __init__(self, params: Iterable[Parameter] | Iterable[tuple[str, Parameter]] | Iterable[dict],
                 defaults: dict[str, Any]):
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Parameter, dict[str, Any]] = {}
        self._blocks: dict[int, list[FlatBlock]] = {}  # each group's parameters, packed
        groups = list(_check_iterable(params, type(self).__name__))
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add parameters with their own settings; settings not given take the defaults."""
        params = [_parameter(entry) for entry in _check_iterable(group["params"], type(self).__name__)]
        ids = [id(p) for p in params]
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len(set(ids)) < len(ids) or seen.intersection(ids):  # it would be stepped twice a step
            raise ValueError("a parameter appears twice in the parameter groups")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)} for {type(self).__name__}; "
                             f"it takes {sorted(self.defaults)}")
        self.param_groups.append({**self.defaults, **group, "params": params})
        # Packed now, not at the first step: so the first backward already writes the gradients
        # into the flat buffer, and clipping sums them in the same order at every step.
        self._blocks[len(self.param_groups) - 1] = self._pack(params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (``set_to_none``, which frees them) or fill them with zeros."""
        for group in self.param_groups:
            for parameter in group["params"]:
                if set_to_none:
                    parameter.grad = None
                elif parameter.grad is not None:
                    parameter.grad[...] = 0

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        device = self.param_groups[0]["params"][0].device
        profiler.measured(f"{type(self).__name__}.step", "optimizer", self._step, device=device)

    def _step(self) -> None:
        for index, group in enumerate(self.param_groups):
            for block in self._blocks_of_group(index, group):
                if block.shared_state is not None and block.gradients_in_place():
                    grad = -block.grad if group.get("maximize") else block.grad
                    self._update_packed(block.data, grad, block.shared_state, group)
                    block.after_update(self.state)
                    continue
                for parameter in block.parameters:  # one at a time, skipping those without a gradient
                    if parameter.grad is not None:
                        grad = -parameter.grad if group.get("maximize") else parameter.grad
                        self.update(parameter, grad, self.state.setdefault(parameter, {}), group)
                if block.shared_state is not None:  # the states may disagree now: pack them anew
                    self._blocks.pop(index, None)

    def _update_packed(self, data, grad, state: dict[str, Any], group: dict[str, Any]) -> None:
        """``update`` on a packed block. On the CPU, once the state is there, a piece of the flat
        arrays at a time, the pieces shared by the cores (``kernels.for_each_block``): each of the
        update's dozen passes then finds its piece in cache, not in memory. Each element's
        arithmetic is the same, and so is the result, bit for bit."""
        pieces = {key: value for key, value in state.items() if getattr(value, "shape", None) == data.shape}
        if backend.device_of(data) != "cpu" or not pieces or data.size < 4 * kernels.BLOCK:
            self.update(types.SimpleNamespace(data=data), grad, state, group)
            return
        states: dict[int, dict[str, Any]] = {}

        def update_piece(block: slice) -> None:
            piece = states[block.start] = {**state, **{key: value[block] for key, value in pieces.items()}}
            self.update(types.SimpleNamespace(data=data[block]), grad[block], piece, group)

        kernels.for_each_block(update_piece, data.size)
        ordered = [states[start] for start in sorted(states)]
        for key, value in ordered[0].items():
            if key in pieces:
                continue
            if hasattr(value, "shape"):  # an array each piece made for itself: put together
                state[key] = backend.get_array_module(data).concatenate([piece[key] for piece in ordered])
            else:  # a number every piece moved alike (the step count)
                state[key] = value

    def _blocks_of_group(self, index: int, group: dict[str, Any]) -> list[FlatBlock]:
        """The group's parameters packed by device and dtype (see optim/flat.py), packed anew
        where anything replaced a view since."""
        blocks = self._blocks.get(index)
        if blocks is None or not all(block.intact(self.state) for block in blocks):
            blocks = self._blocks[index] = self._pack(group["params"])
        return blocks

    def _pack(self, parameters: list[Parameter]) -> list[FlatBlock]:
        alike: dict[tuple[str, Any], list[Parameter]] = {}
        for parameter in parameters:
            alike.setdefault((parameter.device, parameter.dtype), []).append(parameter)
        return [FlatBlock(params, self.state) for params in alike.values()]

    def update(self, parameter: Parameter, grad, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    # ---- saving and resuming

    def state_dict(self) -> dict[str, Any]:
        """Settings and state, parameters numbered in group order (as torch numbers them)."""
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        state = {index[id(p)]: {k: backend.host_copy(v) if hasattr(v, "shape") else v for k, v in s.items()}
                 for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore settings and state saved by ``state_dict`` into an optimizer over the same model."""
        saved_groups = state_dict["param_groups"]
        unknown = {key for saved in saved_groups for key in saved} - set(self.defaults) - {"params", "initial_lr"}
        if unknown:  # (initial_lr is a schedule's, kept in the groups as torch keeps it)
            raise ValueError(f"the saved optimizer state has settings {sorted(unknown)} that {type(self).__name__} "
                             "does not take: was it saved by another kind of optimizer?")
        if len(saved_groups) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups)):
            raise ValueError("the saved optimizer state has different parameter groups than this optimizer: "
                             f"saved sizes {[len(s['params']) for s in saved_groups]}, "
                             f"here {[len(g['params']) for g in self.param_groups]}")
        parameters = {}
        for saved, group in zip(saved_groups, self.param_groups):
            parameters.update(zip(saved["params"], group["params"]))
        state = {}  # all restored before anything changes: a refused load leaves the optimizer as it was
        for key, saved_state in state_dict["state"].items():
            parameter = parameters[int(key)]
            state[parameter] = {k: _restore(v, parameter) for k, v in saved_state.items()}
        for saved, group in zip(saved_groups, self.param_groups):
            group.update({k: tuple(v) if isinstance(self.defaults.get(k), tuple) else v
                          for k, v in saved.items() if k != "params"})
        self.state = state  # packed anew, from these, at the next step


def _check_iterable(params: Any, optimizer: str) -> Any:
    if isinstance(params, Tensor):  # iterating would give its rows, each silently never trained
        raise TypeError(f"{optimizer} takes an iterable of parameters, got a single tensor: pass [parameter] "
                        "or model.parameters()")
    return params


def _parameter(entry: Any) -> Tensor:
    """The parameter of an entry of ``params``, which may be a ``(name, parameter)`` pair."""
    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
        entry = entry[1]
    if not isinstance(entry, Tensor) or not entry.is_leaf:
        raise TypeError(f"an optimizer updates leaf tensors (nn.Parameter), got {entry!r:.80}")
    return entry


def _restore(value: Any, parameter: Parameter) -> Any:
    if not hasattr(value, "shape"):
        return value
    if tuple(value.shape) != parameter.shape:
        raise ValueError(f"saved optimizer state of shape {tuple(value.shape)} does not fit a parameter "
                         f"of shape {parameter.shape}")
    return backend.to_device(value, parameter.device).astype(parameter.dtype)

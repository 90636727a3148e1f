"""``minigrad.nn``: modules and parameters, mirroring ``torch.nn``."""
from minigrad.nn import init
from minigrad.nn.layers import GELU, DropPath, Dropout, Identity, LayerNorm, Linear
from minigrad.nn.module import Module, ModuleList, Parameter, Sequential

__all__ = ["GELU", "DropPath", "Dropout", "Identity", "LayerNorm", "Linear", "Module", "ModuleList",
           "Parameter", "Sequential", "init"]

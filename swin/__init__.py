"""``swin``: the Swin Transformer (Liu et al. 2021) on minigrad, numerically the official model.

    from swin import swin_t, load_pretrained
    model = swin_t(num_classes=11)
    load_pretrained(model, "swin_tiny_patch4_window7_224.npz")   # head left out: 11 != 1000 classes
"""
from swin.attention import WindowAttention
from swin.model import BasicLayer, Mlp, PatchEmbed, PatchMerging, SwinTransformer, SwinTransformerBlock
from swin.pretrained import load_pretrained, resize_bias_table
from swin.variants import VARIANTS, build, settings_of, swin_b, swin_l, swin_mini, swin_s, swin_t
from swin.windows import (cyclic_shift, relative_offset_one_hot, relative_position_index, shifted_window_mask,
                          window_partition, window_reverse)

__all__ = ["VARIANTS", "BasicLayer", "Mlp", "PatchEmbed", "PatchMerging", "SwinTransformer",
           "SwinTransformerBlock", "WindowAttention", "build", "cyclic_shift", "load_pretrained",
           "relative_offset_one_hot", "relative_position_index", "resize_bias_table", "settings_of", "shifted_window_mask",
           "swin_b", "swin_l", "swin_mini", "swin_s", "swin_t", "window_partition", "window_reverse"]

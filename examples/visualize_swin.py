"""Swin's ideas drawn by the model's own functions (Liu et al. 2021), one PNG per figure.

    python examples/visualize_swin.py                                   # a synthetic car, swin_mini
    python examples/visualize_swin.py --checkpoint runs/dvm/radam/best.npz --block 1 --head 0
    python examples/visualize_swin.py --image my_car.jpg --stage 1
    python examples/visualize_swin.py --out docs/figures --overwrite    # the README's figures

Every picture is computed by the code the model runs, not drawn by hand: the windows by
``swin.windows``, the attention by the model's own layers, the costs by its ``flops()``.

    file                       what it shows                                      paper
    patches_and_windows.png    4x4 patches, M x M windows                         Fig. 1, Fig. 2 left
    cyclic_shift.png           the map rolled by M // 2, its nine regions          Fig. 2 right, Fig. 4
    attention_masks.png        the (M^2 x M^2) mask of every window of a stage    Fig. 4, Sec. 3.2
    relative_position.png      relative index of one query, the learned bias      Eq. 4, Sec. 3.2
    attention_maps.png         softmax(QK^T/sqrt(d) + B + mask) over the photo    Eq. 4
    patch_merging.png          which 2x2 tokens make a merged token, in order     Fig. 3, Sec. 3.1
    complexity.png             global MSA against W-MSA as the image grows        Eq. 1, Eq. 2

A folder that already holds files is never written into: a second run goes to ``runs/figures-2``,
and so on. ``--overwrite`` replaces this script's own figures in ``--out`` and refuses a folder that
holds anything else.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy
# Figures made without pyplot: no display needed, and no global list of open figures to close.
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

import minigrad
from datasets import SyntheticCarColours
from datasets.folder import image_problem
from datasets.transforms import CenterCrop, Normalize, Resize, ToArray
from minigrad import backend, nn
from minigrad import functional as F
from minigrad.tensor import Tensor
from predict import load_classifier
from swin import (PatchMerging, SwinTransformer, WindowAttention, build, cyclic_shift,
                  relative_position_index, shifted_window_mask, window_reverse)
from swin.model import unusable_size_reason

FIGURES = ("patches_and_windows", "cyclic_shift", "attention_masks", "relative_position", "attention_maps",
           "patch_merging", "complexity")
DEFAULT_MODEL = "swin_mini"
SLOT_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")  # the four parts of a merged token
SLOT_SLICES = ("x[0::2, 0::2]", "x[1::2, 0::2]", "x[0::2, 1::2]", "x[1::2, 1::2]")


class Stage(NamedTuple):
    """Where a stage's windows lie: ``resolution`` x ``resolution`` tokens of ``token_pixels`` pixels
    each, cut into ``window`` x ``window`` windows, shifted by ``shift`` tokens in its odd blocks."""
    index: int
    resolution: int
    window: int
    shift: int
    token_pixels: int


def stage_geometry(model: SwinTransformer, stage: int) -> Stage:
    """The windows of ``model``'s stage as its blocks built them (a stage of one window has no shift)."""
    blocks = model.layers[stage].blocks
    shift = max(block.shift_size for block in blocks)
    return Stage(stage, blocks[0].input_resolution, blocks[0].window_size, shift,
                 model.patch_size * 2**stage)


# ----------------------------------------------------------------------------------------- inputs


def fresh_folder(out: Path, overwrite: bool) -> Path:
    """The folder the figures go to. Without ``overwrite``: ``out`` if it is new or empty, else the
    first of ``out-2``, ``out-3``, ... that is (mkdir, not exists(): of two runs started together,
    each makes a folder of its own). With ``overwrite``: ``out`` itself, provided it holds nothing but
    this script's figures."""
    if overwrite:
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} is a file; name a folder for the figures")
        strangers = sorted(path.name for path in out.iterdir()
                           if path.name not in {f"{name}.png" for name in FIGURES}) if out.exists() else []
        if strangers:
            raise FileExistsError(f"--overwrite replaces only this script's figures, but {out} also holds "
                                  f"{', '.join(strangers[:5])}; choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        return out
    folder, number = out, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            if folder.is_dir() and not any(folder.iterdir()):
                return folder
        number += 1
        folder = out.with_name(f"{out.name}-{number}")


def load_photo(image: Path | None, size: int, seed: int) -> numpy.ndarray:
    """The photo, ``(size, size, 3)`` uint8: ``image`` resized (shorter side) and centre-cropped,
    or without one a synthetic car drawn by ``datasets.SyntheticCarColours``."""
    if image is None:
        return numpy.asarray(SyntheticCarColours(size=11, image_size=size, split="test", seed=seed).image(0))
    if not image.is_file():
        raise FileNotFoundError(f"--image {image}: no such file; pass a photo (.jpg, .png, ...) or leave "
                                f"--image out to draw a synthetic car")
    problem = image_problem(image)
    if problem is not None:
        raise ValueError(f"--image {image}: Pillow cannot open it as an image ({problem}); "
                         f"pass a .jpg or .png")
    with Image.open(image) as opened:
        photo = CenterCrop(size)(Resize(size)(opened.convert("RGB"), None), None)
    return numpy.asarray(photo)


def model_input(photo: numpy.ndarray) -> numpy.ndarray:
    """The photo as the model sees it: ``(1, 3, H, W)`` float32, normalised as in training."""
    return Normalize()(ToArray()(Image.fromarray(photo), None), None)[None]


def load_model(args: argparse.Namespace) -> tuple[SwinTransformer, str, str]:
    """The model to draw, in eval mode; its variant's name; where its weights come from (for the captions)."""
    if args.checkpoint is None:
        name = args.model or DEFAULT_MODEL
        minigrad.manual_seed(args.seed)
        model = build(name, num_classes=11, **({} if args.img_size is None else {"img_size": args.img_size}))
        return model.eval(), name, f"the freshly initialised {name} (seed {args.seed}, no --checkpoint)"
    model, _ = load_classifier(args.checkpoint, "cpu")  # checks the file, says what is wrong with it
    architecture = minigrad.load(args.checkpoint)["architecture"]  # the variant's name, which the model lacks
    name, size = architecture["name"], architecture["img_size"]
    if args.model not in (None, name) or args.img_size not in (None, size):
        raise ValueError(f"--checkpoint {args.checkpoint} holds a {name} for {size} px images, not the "
                         f"--model {args.model or name} at --img-size {args.img_size or size} asked for; "
                         f"leave --model and --img-size out (the checkpoint says which model it is)")
    return model, name, f"the trained model of {args.checkpoint}"


# ------------------------------------------------------------------------ the model, from outside


def attention_input(model: SwinTransformer, images: numpy.ndarray,
                    attention: WindowAttention) -> tuple[Tensor, Any]:
    """The windows ``(B * nW, M*M, C)`` and mask that ``attention`` receives when the model runs on
    ``images``: recorded during the model's own forward pass (minigrad has no forward hooks, so the
    instance's ``forward`` is wrapped for the duration of the call), not recomputed beside it."""
    received = {}
    forward = attention.forward

    def record(windows: Tensor, mask: Any = None) -> Tensor:
        received["windows"], received["mask"] = windows, mask
        return forward(windows, mask)

    attention.forward = record
    try:
        with minigrad.no_grad():
            model(images)
    finally:
        del attention.forward
    return received["windows"], received["mask"]


def attention_probabilities(attention: WindowAttention, windows: Tensor, mask: Any) -> numpy.ndarray:
    """Eq. 4's SoftMax(Q K^T / sqrt(d) + B + mask), ``(B * nW, heads, M*M, M*M)``, from the
    attention's own pieces: its qkv Linear, its scale, its ``relative_position_bias()`` and the mask."""
    count, tokens, channels = windows.shape
    heads = attention.num_heads
    with minigrad.no_grad():
        qkv = attention.qkv(windows).reshape(count, tokens, 3, heads, channels // heads)
        # (B*nW, heads, n, d) each
        query, key = qkv[:, :, 0].transpose(0, 2, 1, 3), qkv[:, :, 1].transpose(0, 2, 1, 3)
        logits = (query * attention.scale) @ key.transpose(0, 1, 3, 2) + attention.relative_position_bias()
        if mask is not None:
            masks = mask.shape[0]
            logits = (logits.reshape(count // masks, masks, heads, tokens, tokens)
                      + mask[:, None]).reshape(count, heads, tokens, tokens)
        return backend.asnumpy(F.softmax(logits, axis=-1).data)


def concatenation_sources(resolution: int) -> numpy.ndarray:
    """For every merged token (i, j) and each of its four parts k, the (row, col) of the token that
    ``PatchMerging`` puts there: ``(R/2, R/2, 4, 2)``. Found by running the real module, with its
    LayerNorm and Linear taken out, on a map whose two channels are each token's row and column."""
    probe = PatchMerging(resolution, dim=2)
    probe.norm, probe.reduction = nn.Identity(), nn.Identity()
    rows, cols = numpy.meshgrid(numpy.arange(resolution), numpy.arange(resolution), indexing="ij")
    positions = numpy.stack([rows, cols], axis=-1).astype(numpy.float32).reshape(1, resolution**2, 2)
    with minigrad.no_grad():
        merged = probe(Tensor(positions)).numpy()
    return merged.reshape(resolution // 2, resolution // 2, 4, 2).astype(numpy.int64)


def omega_msa(h: int, w: int, channels: int) -> int:
    """Eq. 1: multiply-adds of global multi-head self-attention over h x w tokens."""
    return 4 * h * w * channels**2 + 2 * (h * w) ** 2 * channels


def omega_window_msa(h: int, w: int, channels: int, window: int) -> int:
    """Eq. 2: multiply-adds of window attention, M x M windows, over h x w tokens."""
    return 4 * h * w * channels**2 + 2 * window**2 * h * w * channels


# ------------------------------------------------------------------------------------ drawing aids


def finish(figure: Figure, title: str, caption: str, drawer: Callable) -> Figure:
    """Title on top; below, what to see and which function drew the figure."""
    figure.suptitle(title, fontsize=11)
    figure.text(0.5, 0.01, f"{caption}\n[drawn by examples/visualize_swin.py: {drawer.__name__}]",
                ha="center", va="bottom", fontsize=7.5, wrap=True)
    return figure


def show_photo(axes, photo: numpy.ndarray, label: str, title: str) -> None:
    """The photo in ``axes``, labelled (so that tests find it) and titled, without ticks."""
    axes.imshow(photo, interpolation="nearest")
    axes.set_label(label)
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])


def overlay(axes, per_token: numpy.ndarray, size: int, label: str, **style: Any) -> None:
    """A value per token, stretched over the ``size`` x ``size`` photo already in ``axes``."""
    axes.imshow(per_token, extent=(-0.5, size - 0.5, size - 0.5, -0.5), interpolation="nearest", label=label,
                **style)


def grid_lines(axes, size: int, step: int, **style: Any) -> None:
    """Lines every ``step`` pixels across a ``size`` x ``size`` image."""
    for position in range(0, size + 1, step):
        axes.axhline(position - 0.5, **style)
        axes.axvline(position - 0.5, **style)


def to_tokens(photo: numpy.ndarray, token_pixels: int) -> numpy.ndarray:
    """``(H, W, 3)`` pixels as a ``(1, H/t, W/t, t*t*3)`` map of tokens, the layout swin.windows takes."""
    size, t = photo.shape[0], token_pixels
    blocks = photo.reshape(size // t, t, size // t, t, 3).transpose(0, 2, 1, 3, 4)
    return blocks.reshape(1, size // t, size // t, t * t * 3)


def to_pixels(tokens: numpy.ndarray, token_pixels: int) -> numpy.ndarray:
    """The inverse of ``to_tokens``."""
    resolution, t = tokens.shape[1], token_pixels
    blocks = tokens.reshape(resolution, resolution, t, t, 3).transpose(0, 2, 1, 3, 4)
    return blocks.reshape(resolution * t, resolution * t, 3)


def region_labels(resolution: int, window: int, shift: int) -> numpy.ndarray:
    """The nine regions of the shifted map (Fig. 4), labelled 0..8 row by row: each axis is cut where
    the last window begins (R - M) and where the rows and columns rolled in from the other side
    begin (R - shift)."""
    strip = numpy.digitize(numpy.arange(resolution), [resolution - window, resolution - shift])
    return strip[:, None] * 3 + strip[None, :]


# ---------------------------------------------------------------------------------------- figures


def draw_patches_and_windows(photo: numpy.ndarray, stage: Stage, patch_size: int) -> Figure:
    """Paper Fig. 1 and Fig. 2 (left): the image cut into 4x4 patches (the tokens), and the tokens
    of ``stage`` grouped into M x M windows (colour = window number): each window of
    ``window_partition``'s order, filled with its number, put back on the map by its inverse
    ``window_reverse``."""
    size, r, m, t = photo.shape[0], stage.resolution, stage.window, stage.token_pixels
    count = (r // m) ** 2
    numbered_windows = numpy.broadcast_to(numpy.arange(count).reshape(count, 1, 1, 1), (count, m, m, 1))
    window_of_token = window_reverse(numbered_windows, m, r, r)[0, :, :, 0]

    figure = Figure(figsize=(8, 4.6))
    patches, windows = figure.subplots(1, 2)
    show_photo(patches, photo, "patches", f"{size // patch_size}x{size // patch_size} patches of "
                                          f"{patch_size}x{patch_size} px")
    grid_lines(patches, size, patch_size, color="white", linewidth=0.4)
    show_photo(windows, photo, "photo under windows", f"stage {stage.index + 1}: {r}x{r} tokens, "
                                                      f"{count} windows of {m}x{m}")
    overlay(windows, window_of_token, size, "windows", cmap="tab20", alpha=0.45)
    grid_lines(windows, size, t, color="white", linewidth=0.3)
    grid_lines(windows, size, m * t, color="black", linewidth=1.5)
    for number in range(count):
        row, col = divmod(number, r // m)
        windows.text((col + 0.5) * m * t - 0.5, (row + 0.5) * m * t - 0.5, str(number), ha="center",
                     va="center", fontsize=9, color="black", weight="bold")
    return finish(figure, "Patches and windows (Fig. 1, 2)",
                  "Attention is computed only among the tokens of one window: the cost grows with the "
                  "number of windows, not with its square. Windows are numbered row by row.",
                  draw_patches_and_windows)


def draw_cyclic_shift(photo: numpy.ndarray, stage: Stage) -> Figure:
    """Paper Fig. 2 (right) and Fig. 4: the tokens rolled by ``cyclic_shift`` (M // 2 up and left),
    the regular window grid over the rolled map, and its nine regions (labels as
    ``shifted_window_mask`` cuts them)."""
    size, r, m, s, t = photo.shape[0], stage.resolution, stage.window, stage.shift, stage.token_pixels
    shifted = to_pixels(cyclic_shift(to_tokens(photo, t), s), t)
    labels = region_labels(r, m, s)

    figure = Figure(figsize=(8, 4.6))
    before, after = figure.subplots(1, 2)
    show_photo(before, photo, "photo", f"the shifted windows on the image (offset {s} tokens)")
    grid_lines(before, size, m * t, color="black", linewidth=1.0, linestyle=":")
    for position in range(s * t, size, m * t):
        before.axhline(position - 0.5, color="yellow", linewidth=1.5)
        before.axvline(position - 0.5, color="yellow", linewidth=1.5)
    show_photo(after, shifted, "shifted", f"cyclic_shift by {s}: windows of {m}x{m}, nine regions")
    overlay(after, labels, size, "regions", cmap="Pastel1", alpha=0.4)
    grid_lines(after, size, m * t, color="black", linewidth=1.5)
    cuts = [0, r - m, r - s, r]
    for cut in cuts[1:3]:
        after.axhline(cut * t - 0.5, color="red", linewidth=1.5, linestyle="--")
        after.axvline(cut * t - 0.5, color="red", linewidth=1.5, linestyle="--")
    for row in range(3):
        for col in range(3):
            y = (cuts[row] + cuts[row + 1]) / 2 * t - 0.5
            x = (cuts[col] + cuts[col + 1]) / 2 * t - 0.5
            after.text(x, y, str(row * 3 + col), ha="center", va="center", fontsize=10, weight="bold",
                       color="black", bbox=dict(boxstyle="circle,pad=0.15", facecolor="white", alpha=0.8))
    return finish(figure, "Cyclic shift (Fig. 2, 4)",
                  "Rolling the map keeps the windows regular; a window at the bottom or right edge now "
                  "holds tokens of up to four regions (0-8) that were not neighbours, so it is masked.",
                  draw_cyclic_shift)


def draw_attention_masks(stage: Stage) -> Figure:
    """Sec. 3.2: ``shifted_window_mask`` of ``stage``, one (M^2 x M^2) matrix per window, placed
    where the window lies on the map: 0 where two tokens may attend, -100 where they may not."""
    r, m, s = stage.resolution, stage.window, stage.shift
    masks = backend.asnumpy(shifted_window_mask(r, r, m, s))
    per_side = r // m
    figure = Figure(figsize=(7, 7.6))
    grid = figure.subplots(per_side, per_side, squeeze=False)
    for number, axes in enumerate(grid.flat):
        image = axes.imshow(masks[number], cmap="gray", vmin=-100, vmax=0, interpolation="nearest")
        axes.set_label(f"window {number}")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(str(number), fontsize=7, pad=2)
    figure.colorbar(image, ax=grid.ravel().tolist(), shrink=0.5, label="added to the logit (0 or -100)")
    return finish(figure, f"Attention masks of stage {stage.index + 1} (shift {s}, window {m})",
                  "White: the two tokens are neighbours in the image, attention allowed (0). Black: -100, "
                  "softmax gives ~0. Only edge windows are split.", draw_attention_masks)


def draw_relative_position(attention: WindowAttention, query: int, head: int, weights: str) -> Figure:
    """Eq. 4's B for one query token: its row of ``relative_position_index`` (which table entry each
    key reads), the learned ``relative_position_bias_table`` of one head as (2M-1) x (2M-1) offsets,
    and the bias the query adds to each key's logit (the table read through the index)."""
    m = attention.window_size
    index = backend.asnumpy(relative_position_index(m))[query].reshape(m, m)
    table = backend.asnumpy(attention.relative_position_bias_table.data)[:, head]
    table = table.reshape(2 * m - 1, 2 * m - 1)  # row dh + M - 1, column dw + M - 1
    bias = table.reshape(-1)[index]
    query_row, query_col = divmod(query, m)

    figure = Figure(figsize=(11, 4.2))
    index_axes, table_axes, bias_axes = figure.subplots(1, 3)
    index_axes.imshow(index, cmap="viridis", interpolation="nearest")
    index_axes.set_label("relative index")
    index_axes.set_title(f"relative_position_index, query {query}", fontsize=9)
    for (row, col), value in numpy.ndenumerate(index):
        index_axes.text(col, row, str(value), ha="center", va="center", fontsize=8, color="white")
    table_image = table_axes.imshow(table, cmap="coolwarm", interpolation="nearest",
                                    extent=(-m + 0.5, m - 0.5, m - 0.5, -m + 0.5))
    table_axes.set_label("bias table")
    table_axes.set_title(f"bias table, head {head} (dh, dw)", fontsize=9)
    table_axes.add_patch(Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
    figure.colorbar(table_image, ax=table_axes, shrink=0.8)
    bias_image = bias_axes.imshow(bias, cmap="coolwarm", interpolation="nearest")
    bias_axes.set_label("query bias")
    bias_axes.set_title(f"B added to query {query}'s logits", fontsize=9)
    figure.colorbar(bias_image, ax=bias_axes, shrink=0.8)
    for axes in (index_axes, bias_axes):
        axes.add_patch(Rectangle((query_col - 0.5, query_row - 0.5), 1, 1, fill=False, edgecolor="red",
                                 linewidth=2))
        axes.set_xticks(range(m))
        axes.set_yticks(range(m))
    return finish(figure, f"Relative position bias (Eq. 4), window {m}x{m}",
                  f"Each key reads the table at (dh, dw) = query - key: pairs at one offset share an entry "
                  f"(red: query; black: offset 0). Weights: {weights}.", draw_relative_position)


def draw_attention_maps(photo: numpy.ndarray, probabilities: numpy.ndarray, stage: Stage, shifted: bool,
                        window: int, head: int, weights: str) -> Figure:
    """Eq. 4's attention inside one window: for every query token, its softmax over the window's
    keys, laid over the pixels that window sees (``probabilities`` from ``attention_probabilities``,
    ``(nW, heads, M*M, M*M)`` for one image)."""
    size, r, m, s, t = photo.shape[0], stage.resolution, stage.window, stage.shift, stage.token_pixels
    layout = to_pixels(cyclic_shift(to_tokens(photo, t), s), t) if shifted else photo
    window_row, window_col = divmod(window, r // m)
    top, left = window_row * m * t, window_col * m * t
    crop = layout[top:top + m * t, left:left + m * t]

    figure = Figure(figsize=(10, 5.4))
    overview = figure.add_axes((0.02, 0.12, 0.4, 0.72))
    show_photo(overview, layout, "layout", ("the cyclically shifted map" if shifted else "the map")
               + f": window {window}")
    overview.add_patch(Rectangle((left - 0.5, top - 0.5), m * t, m * t, fill=False, edgecolor="red",
                                 linewidth=2))
    for query in range(m * m):
        row, col = divmod(query, m)
        # Square cells in a 0.72-high block on the right (the figure is 10 x 5.4 inches).
        axes = figure.add_axes((0.5 + col * 0.389 / m, 0.84 - (row + 1) * 0.72 / m, 0.37 / m, 0.7 / m))
        axes.imshow(crop, interpolation="nearest")
        axes.imshow(probabilities[window, head, query].reshape(m, m), cmap="inferno", alpha=0.65, vmin=0,
                    extent=(-0.5, m * t - 0.5, m * t - 0.5, -0.5), interpolation="nearest")
        axes.add_patch(Rectangle((col * t - 0.5, row * t - 0.5), t, t, fill=False, edgecolor="cyan",
                                 linewidth=1))
        axes.set_label(f"query {query}")
        axes.set_xticks([])
        axes.set_yticks([])
    block_kind = "SW-MSA (shifted, masked)" if shifted else "W-MSA"
    title = f"Attention maps: stage {stage.index + 1}, {block_kind}, head {head}, window {window}"
    return finish(figure, title,
                  f"Each small panel: one query (cyan) and its softmax weights over the {m * m} keys of the "
                  f"window (bright = high). Weights: {weights}.", draw_attention_maps)


def draw_patch_merging(photo: numpy.ndarray, sources: numpy.ndarray, stage: Stage) -> Figure:
    """Sec. 3.1: ``PatchMerging`` after ``stage`` concatenates each 2x2 group of tokens into one token of
    4C channels. Colour = the part (0..3) of the concatenation a token goes to, as ``sources`` (from
    ``concatenation_sources``) says; right, the channel order of merged token (0, 0)."""
    size, r, t = photo.shape[0], stage.resolution, stage.token_pixels
    slot_of_token = numpy.empty((r, r), dtype=numpy.int64)
    slot_of_token[sources[..., 0], sources[..., 1]] = numpy.arange(4)  # sources: (R/2, R/2, part, row|col)

    figure = Figure(figsize=(9, 4.6))
    tokens_axes, channels_axes = figure.subplots(1, 2, width_ratios=(1, 1.1))
    show_photo(tokens_axes, photo, "photo under slots", f"stage {stage.index + 1}: {r}x{r} tokens -> "
                                                        f"{r // 2}x{r // 2} merged")
    overlay(tokens_axes, slot_of_token, size, "slots", cmap=ListedColormap(SLOT_COLOURS), vmin=-0.5, vmax=3.5,
            alpha=0.5)
    grid_lines(tokens_axes, size, t, color="white", linewidth=0.3)
    grid_lines(tokens_axes, size, 2 * t, color="black", linewidth=1.2)
    if r <= 16:
        for (row, col), slot in numpy.ndenumerate(slot_of_token):
            tokens_axes.text((col + 0.5) * t - 0.5, (row + 0.5) * t - 0.5, str(slot), ha="center",
                             va="center", fontsize=6)
    channels_axes.set_label("channels")
    channels_axes.set_xlim(-0.1, 4.1)
    channels_axes.set_ylim(0, 1)
    channels_axes.axis("off")
    channels_axes.set_title("the 4C channels of merged token (0, 0), in order", fontsize=9)
    for slot, ((row, col), colour, slicing) in enumerate(zip(sources[0, 0], SLOT_COLOURS, SLOT_SLICES)):
        channels_axes.add_patch(Rectangle((slot, 0.55), 1, 0.25, facecolor=colour, alpha=0.6,
                                          edgecolor="black"))
        channels_axes.text(slot + 0.5, 0.675, f"{slot}", ha="center", va="center", fontsize=10, weight="bold")
        channels_axes.text(slot + 0.5, 0.45, f"{slicing}\ntoken ({row}, {col})", ha="center", va="top",
                           fontsize=7.5)
    channels_axes.text(2, 0.15, "then LayerNorm(4C), Linear(4C -> 2C, no bias)", ha="center", fontsize=8)
    return finish(figure, "Patch merging (Sec. 3.1)",
                  "Each merged token (black squares) stacks its four tokens in the order 0-3: "
                  "top-left, bottom-left, top-right, bottom-right.", draw_patch_merging)


def draw_complexity(points: dict[str, numpy.ndarray], patch_size: int, channels: int, window: int) -> Figure:
    """Eq. 1 and Eq. 2 against the image size, for the first stage (h = w = size / patch, C channels);
    points: the model's own counts (``WindowAttention.flops``, ``SwinTransformer.flops``), from
    ``complexity_points``."""
    sizes = points["size"]
    curve = numpy.linspace(sizes.min(), sizes.max(), 100)
    sides = curve / patch_size
    figure = Figure(figsize=(10, 4.4))
    layer_axes, model_axes = figure.subplots(1, 2)
    layer_axes.plot(curve, [omega_msa(h, h, channels) for h in sides], label="Omega(MSA), Eq. 1")
    layer_axes.plot(curve, [omega_window_msa(h, h, channels, window) for h in sides],
                    label="Omega(W-MSA), Eq. 2")
    layer_axes.plot(sizes, points["global attention"], "o", color="tab:blue",
                    label="WindowAttention.flops, one window of all tokens")
    layer_axes.plot(sizes, points["window attention"], "s", color="tab:orange",
                    label="WindowAttention.flops x windows")
    layer_axes.set_label("stage 1 attention")
    layer_axes.set_title(f"one attention layer of stage 1 (C = {channels}, M = {window})", fontsize=9)
    model_axes.plot(sizes, points["model"], "o-", label="model.flops() (W-MSA)")
    model_axes.plot(sizes, points["model with global attention"], "s--",
                    label="the same with global MSA in every block")
    model_axes.set_label("whole model")
    model_axes.set_title("the whole model, one image", fontsize=9)
    for axes in (layer_axes, model_axes):
        axes.set_yscale("log")
        axes.set_xlabel("image size (px)")
        axes.set_ylabel("multiply-adds")
        axes.legend(fontsize=7, loc="upper left")
        axes.grid(alpha=0.3)
    figure.subplots_adjust(bottom=0.2)
    return finish(figure, "Cost of global MSA against window MSA (Eq. 1, 2)",
                  "Global attention grows with the square of the number of tokens; window attention "
                  "linearly. Points: the model's own flops() counts.", draw_complexity)


def complexity_points(model_name: str, model: SwinTransformer,
                      sizes: Sequence[int]) -> dict[str, numpy.ndarray]:
    """The model rebuilt at each of ``sizes`` (same variant, window and classes), and its own counts:
    the first block's ``attn.flops`` for W-MSA (per window, times windows) and for global MSA (one
    window of all tokens), ``flops()`` of the whole model, and the whole model with every block's
    window attention swapped for global attention."""
    names = ("size", "window attention", "global attention", "model", "model with global attention")
    points: dict[str, list[int]] = {name: [] for name in names}
    for size in sizes:
        rebuilt = build(model_name, img_size=size, window_size=model.window_size,
                        num_classes=model.num_classes)
        blocks = [block for layer in rebuilt.layers for block in layer.blocks]

        def window_and_global(block) -> tuple[int, int]:
            tokens, per_window = block.input_resolution**2, block.window_size**2
            return tokens // per_window * block.attn.flops(per_window), block.attn.flops(tokens)

        first_window, first_global = window_and_global(blocks[0])
        extra = sum(global_cost - window_cost for window_cost, global_cost in map(window_and_global, blocks))
        values = (size, first_window, first_global, rebuilt.flops(), rebuilt.flops() + extra)
        for name, value in zip(names, values):
            points[name].append(value)
    return {key: numpy.array(values, dtype=numpy.float64) for key, values in points.items()}


def complexity_sizes(model: SwinTransformer, count: int = 5) -> list[int]:
    """``count`` image sizes this model's variant takes, from its own size up."""
    sizes, size = [], model.img_size
    while len(sizes) < count:
        if unusable_size_reason(size, model.patch_size, model.window_size, model.num_layers) is None:
            sizes.append(size)
        size += model.patch_size
    return sizes


# ------------------------------------------------------------------------------------ command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, help="a photo to draw on (default: a synthetic car drawn by "
                                                  "datasets.SyntheticCarColours)")
    parser.add_argument("--checkpoint", type=Path, help="a run's <optimizer>/best.npz or last.npz, for the "
                                                       "learned bias and attention (default: none, a freshly "
                                                       "initialised model)")
    parser.add_argument("--out", type=Path, default=Path("runs/figures"),
                        help="folder for the PNGs; if it holds files, a fresh sibling such as runs/figures-2 "
                             "(default: runs/figures)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into --out itself, replacing this script's figures there; refused if "
                             "it holds other files (default: off)")
    parser.add_argument("--model", help=f"Swin variant (default: {DEFAULT_MODEL}, or the checkpoint's)")
    parser.add_argument("--img-size", type=int, help="image size in pixels (default: the variant's own, "
                                                     "64 for swin_mini, or the checkpoint's)")
    parser.add_argument("--stage", type=int, default=0, help="stage (0-based) for the windows, shift, masks, "
                                                             "attention and merging (default: 0)")
    parser.add_argument("--block", type=int, default=1, help="block of that stage (0-based) for the bias and "
                                                             "attention; odd blocks are shifted (default: 1)")
    parser.add_argument("--head", type=int, default=0, help="attention head (default: 0)")
    parser.add_argument("--window", type=int, help="window of the attention maps, numbered row by row "
                                                   "(default: the last, bottom-right one)")
    parser.add_argument("--query", type=int, help="token of a window, numbered row by row, for the relative "
                                                  "position figure (default: the one at (M//2, M//2))")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights and of the synthetic car (default: 0)")
    return parser


def check_choices(args: argparse.Namespace, model: SwinTransformer) -> Stage:
    """The chosen stage, after checking every choice against the model (saying what may be chosen)."""
    if not 0 <= args.stage < model.num_layers:
        raise ValueError(f"--stage {args.stage}: this model has stages 0 to {model.num_layers - 1}")
    stage = stage_geometry(model, args.stage)
    if stage.shift == 0:
        shifted = [i for i in range(model.num_layers) if stage_geometry(model, i).shift]
        raise ValueError(f"--stage {args.stage} is a single {stage.resolution}x{stage.resolution} window, "
                         f"with no shift or mask to draw; choose one of the stages {shifted}")
    blocks = model.layers[args.stage].blocks
    if not 0 <= args.block < len(blocks):
        raise ValueError(f"--block {args.block}: stage {args.stage} has blocks 0 to {len(blocks) - 1}")
    heads, windows = blocks[args.block].num_heads, (stage.resolution // stage.window) ** 2
    if not 0 <= args.head < heads:
        raise ValueError(f"--head {args.head}: stage {args.stage} has heads 0 to {heads - 1}")
    if args.window is not None and not 0 <= args.window < windows:
        raise ValueError(f"--window {args.window}: stage {args.stage} has windows 0 to {windows - 1}")
    if args.query is not None and not 0 <= args.query < stage.window**2:
        raise ValueError(f"--query {args.query}: a {stage.window}x{stage.window} window has tokens 0 to "
                         f"{stage.window**2 - 1}")
    return stage


def draw_all(args: argparse.Namespace) -> dict[str, Figure]:
    """Every figure, by name, for the parsed command line."""
    model, model_name, weights = load_model(args)
    stage = check_choices(args, model)
    photo = load_photo(args.image, model.img_size, args.seed)
    block = model.layers[args.stage].blocks[args.block]
    window = (stage.resolution // stage.window) ** 2 - 1 if args.window is None else args.window
    query = (stage.window // 2) * stage.window + stage.window // 2 if args.query is None else args.query
    windows, mask = attention_input(model, model_input(photo), block.attn)
    probabilities = attention_probabilities(block.attn, windows, mask)
    # The last stage has no merging after it: show the one that made it.
    merging_stage = stage_geometry(model, min(args.stage, model.num_layers - 2))
    return {
        "patches_and_windows": draw_patches_and_windows(photo, stage, model.patch_size),
        "cyclic_shift": draw_cyclic_shift(photo, stage),
        "attention_masks": draw_attention_masks(stage),
        "relative_position": draw_relative_position(block.attn, query, args.head, weights),
        "attention_maps": draw_attention_maps(photo, probabilities, stage, block.shift_size > 0, window,
                                              args.head, weights),
        "patch_merging": draw_patch_merging(photo, concatenation_sources(merging_stage.resolution),
                                            merging_stage),
        "complexity": draw_complexity(complexity_points(model_name, model, complexity_sizes(model)),
                                      model.patch_size, model.patch_embed.embed_dim, model.window_size),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Draw every figure and write them as PNGs; returns each figure's file by name."""
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        figures = draw_all(args)
        folder = fresh_folder(args.out, args.overwrite)
    except (OSError, ValueError, RuntimeError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    written = {}
    for name, figure in figures.items():
        written[name] = folder / f"{name}.png"
        figure.savefig(written[name], dpi=90)
    print(f"{len(written)} figures in {folder}", file=sys.stderr)
    return written


if __name__ == "__main__":
    main()

"""examples/visualize_swin.py: every figure is written, and shows what it claims. The checks read
the arrays and labels the figures actually plot, and compare them with swin's own functions and
modules (shifted_window_mask, relative_position_index, PatchMerging, WindowAttention, flops())
or with the paper's formulas, computed here independently."""
import sys
from pathlib import Path

import numpy
import pytest
from PIL import Image

import minigrad
from minigrad import backend
from minigrad.tensor import Tensor
from swin import build, relative_position_index, shifted_window_mask

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import visualize_swin  # noqa: E402
from visualize_swin import FIGURES, draw_all, fresh_folder, main, make_parser  # noqa: E402

SIZE = 32  # swin_mini at 32 px: stage 1 is 8x8 tokens, four 4x4 windows, shifted by 2


def axes_labelled(figure, label: str):
    """The axes of ``figure`` that the script labelled ``label``."""
    found = [axes for axes in figure.axes if axes.get_label() == label]
    assert len(found) == 1, f"expected one axes labelled {label!r}, found {len(found)}"
    return found[0]


def image_labelled(axes, label: str) -> numpy.ndarray:
    """The array of the image labelled ``label`` in ``axes`` (an overlay), or of its first image for None."""
    images = [image for image in axes.images if label is None or image.get_label() == label]
    assert images, f"no image labelled {label!r} in axes {axes.get_label()!r}"
    return numpy.asarray(images[0].get_array())


def parse(*argv: str):
    return make_parser().parse_args(["--img-size", str(SIZE), *argv])


def save_checkpoint(path: Path, img_size: int = SIZE, model_img_size: int = SIZE) -> dict:
    """A checkpoint as examples/train_*.py writes it, its bias tables and qkv set to random values
    (so that nothing can pass by matching a fresh initialisation); returns its model state."""
    minigrad.manual_seed(7)
    state = build("swin_mini", img_size=model_img_size, num_classes=3).state_dict()
    rng = numpy.random.default_rng(3)
    for key in state:  # scale 0.1: logits within a few units, so that -100 still means "never"
        if key.endswith("relative_position_bias_table") or ".attn.qkv." in key:
            state[key] = rng.normal(0.0, 0.1, size=state[key].shape).astype(numpy.float32)
    minigrad.save({"model": state, "classes": ["a", "b", "c"],
                   "architecture": {"name": "swin_mini", "img_size": img_size}}, path)
    return state


@pytest.fixture(scope="module")
def fresh():
    """The figures of the freshly initialised model, with the arguments that drew them."""
    args = parse()
    return args, draw_all(args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The figures of a checkpoint (block 1 of stage 1, head 0, window 3, query 5), and its state."""
    path = tmp_path_factory.mktemp("checkpoint") / "best.npz"
    state = save_checkpoint(path)
    args = make_parser().parse_args(["--checkpoint", str(path), "--block", "1", "--head", "0",
                                     "--window", "3", "--query", "5"])
    return args, draw_all(args), state


def model_of(args):
    model, _, _ = visualize_swin.load_model(args)
    return model


def photo_of(args, model):
    return visualize_swin.load_photo(args.image, model.img_size, args.seed)


def test_every_figure_is_written_once_as_a_picture_with_a_title_and_a_caption_naming_its_function(tmp_path):
    written = main(["--img-size", str(SIZE), "--out", str(tmp_path / "figures")])
    assert list(written) == list(FIGURES)
    files = sorted(path.name for path in (tmp_path / "figures").iterdir())
    assert files == sorted(f"{name}.png" for name in FIGURES)
    for name, path in written.items():
        with Image.open(path) as image:
            pixels = numpy.asarray(image.convert("RGB"), dtype=numpy.float32)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200, name
        assert pixels.std() > 10, f"{name} looks blank"
        assert path.stat().st_size < 150_000, f"{name} is {path.stat().st_size} bytes"


def test_each_figure_has_a_title_and_says_which_function_drew_it(fresh):
    _, figures = fresh
    for name, figure in figures.items():
        assert figure._suptitle is not None and figure._suptitle.get_text(), name
        captions = [text.get_text() for text in figure.texts if "drawn by" in text.get_text()]
        assert len(captions) == 1, name
        drawer = captions[0].split("drawn by examples/visualize_swin.py: ")[1].rstrip("]")
        assert drawer == f"draw_{name}" and callable(getattr(visualize_swin, drawer)), name


def test_the_window_figure_numbers_tokens_by_window_row_by_row(fresh):
    args, figures = fresh
    windows = axes_labelled(figures["patches_and_windows"], "photo under windows")
    window_of_token = image_labelled(windows, "windows")
    rows, cols = numpy.indices((8, 8))
    assert numpy.array_equal(window_of_token, rows // 4 * 2 + cols // 4)  # 8x8 tokens, 4x4 windows, row-major
    assert sorted(text.get_text() for text in windows.texts) == ["0", "1", "2", "3"]
    for text in windows.texts:  # each number in its window
        x, y = text.get_position()
        assert window_of_token[int(y + 0.5) // 4, int(x + 0.5) // 4] == int(text.get_text())
    patches = axes_labelled(figures["patches_and_windows"], "patches")
    assert numpy.array_equal(image_labelled(patches, None), photo_of(args, model_of(args)))


def test_the_shifted_photo_is_rolled_by_half_a_window_and_the_nine_labels_sit_in_their_regions(fresh):
    args, figures = fresh
    figure = figures["cyclic_shift"]
    photo = photo_of(args, model_of(args))
    shifted = axes_labelled(figure, "shifted")
    token_pixels, shift, window = 4, 2, 4
    rolled = numpy.roll(photo, (-shift * token_pixels, -shift * token_pixels), axis=(0, 1))
    assert numpy.array_equal(image_labelled(shifted, None), rolled)

    regions = image_labelled(shifted, "regions")
    assert sorted(numpy.unique(regions)) == list(range(9))
    # The regions are those the mask is made of: two tokens of a window may attend iff same region.
    masks = backend.asnumpy(shifted_window_mask(8, 8, window, shift))
    region_windows = regions.reshape(2, window, 2, window).transpose(0, 2, 1, 3).reshape(4, window * window)
    same_region = region_windows[:, :, None] == region_windows[:, None, :]
    assert numpy.array_equal(masks == 0, same_region)

    labels = [text for text in shifted.texts]
    assert sorted(text.get_text() for text in labels) == [str(k) for k in range(9)]
    for text in labels:
        x, y = text.get_position()
        assert regions[int(y + 0.5) // token_pixels, int(x + 0.5) // token_pixels] == int(text.get_text())


def test_the_mask_figure_draws_shifted_window_mask_window_by_window(fresh):
    _, figures = fresh
    masks = backend.asnumpy(shifted_window_mask(8, 8, 4, 2))
    for number, mask in enumerate(masks):
        drawn = image_labelled(axes_labelled(figures["attention_masks"], f"window {number}"), None)
        assert numpy.array_equal(drawn, mask)
    assert not any(axes.get_label() == f"window {len(masks)}" for axes in figures["attention_masks"].axes)
    assert set(numpy.unique(masks)) == {0.0, -100.0}  # the figure shows both values


def test_relative_position_figure_draws_the_index_row_and_the_checkpoints_bias_table(trained):
    _, figures, state = trained
    figure, query, head, m = figures["relative_position"], 5, 0, 4
    index = relative_position_index(m)[query].reshape(m, m)
    assert numpy.array_equal(image_labelled(axes_labelled(figure, "relative index"), None), index)
    table = state["layers.0.blocks.1.attn.relative_position_bias_table"][:, head]
    table = table.reshape(2 * m - 1, 2 * m - 1)
    assert numpy.array_equal(image_labelled(axes_labelled(figure, "bias table"), None), table)
    # Query 5 is token (1, 1): the key at (r, c) reads the table at offset (1 - r, 1 - c).
    expected_bias = numpy.array([[table[1 - r + m - 1, 1 - c + m - 1] for c in range(m)] for r in range(m)])
    assert numpy.allclose(image_labelled(axes_labelled(figure, "query bias"), None), expected_bias)


def test_relative_position_bias_shown_is_what_the_model_adds(trained):
    args, figures, _ = trained
    attention = model_of(args).layers[0].blocks[1].attn
    with minigrad.no_grad():
        added = attention.relative_position_bias().numpy()[0, 5].reshape(4, 4)
    drawn = image_labelled(axes_labelled(figures["relative_position"], "query bias"), None)
    assert numpy.allclose(drawn, added)


def test_attention_probabilities_reproduce_the_models_attention_and_respect_the_mask(trained):
    args, figures, _ = trained
    model = model_of(args)
    attention = model.layers[0].blocks[1].attn
    images = numpy.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(numpy.float32)
    windows, mask = visualize_swin.attention_input(model, images, attention)
    assert "forward" not in attention.__dict__  # the recorder is gone
    assert windows.shape == (2 * 4, 16, 32) and numpy.array_equal(mask, shifted_window_mask(8, 8, 4, 2))
    probabilities = visualize_swin.attention_probabilities(attention, windows, mask)
    assert numpy.allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    assert (probabilities.reshape(2, 4, 1, 16, 16)[numpy.broadcast_to(mask[None, :, None] == -100.0,
                                                                      (2, 4, 1, 16, 16))] < 1e-30).all()
    with minigrad.no_grad():
        value = attention.qkv(windows).numpy().reshape(8, 16, 3, 1, 32)[:, :, 2].transpose(0, 2, 1, 3)
        mixed = (probabilities @ value).transpose(0, 2, 1, 3).reshape(8, 16, 32)
        output = attention(windows, mask).numpy()
        assert numpy.allclose(attention.proj(Tensor(mixed)).numpy(), output, atol=1e-5)


def test_attention_maps_show_the_probabilities_of_the_chosen_window_and_head(trained):
    args, figures, _ = trained
    model = model_of(args)
    attention = model.layers[0].blocks[1].attn
    photo = photo_of(args, model)
    windows, mask = visualize_swin.attention_input(model, visualize_swin.model_input(photo), attention)
    probabilities = visualize_swin.attention_probabilities(attention, windows, mask)
    figure = figures["attention_maps"]
    for query in range(16):
        drawn = axes_labelled(figure, f"query {query}").images[1].get_array()
        assert numpy.allclose(drawn, probabilities[3, 0, query].reshape(4, 4))
    caption = " ".join(text.get_text() for text in figure.texts)
    assert str(args.checkpoint) in caption and "freshly" not in caption


def test_without_a_checkpoint_the_captions_say_the_weights_are_fresh(fresh):
    _, figures = fresh
    for name in ("attention_maps", "relative_position"):
        assert "freshly initialised swin_mini" in " ".join(text.get_text() for text in figures[name].texts)


def test_patch_merging_figure_follows_the_real_modules_concatenation_order(fresh):
    args, figures = fresh
    sources = visualize_swin.concatenation_sources(8)
    i, j = numpy.indices((4, 4))
    expected = numpy.stack([numpy.stack([2 * i + dr, 2 * j + dc], axis=-1)
                            for dr, dc in ((0, 0), (1, 0), (0, 1), (1, 1))], axis=2)
    assert numpy.array_equal(sources, expected)  # x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]

    # The order found, applied by hand, then the model's own LayerNorm and Linear: PatchMerging's output.
    merging = model_of(args).layers[0].downsample
    x = numpy.random.default_rng(1).normal(size=(2, 64, 32)).astype(numpy.float32)
    grid = x.reshape(2, 8, 8, 32)
    by_hand = numpy.concatenate([grid[:, sources[..., k, 0], sources[..., k, 1]] for k in range(4)], axis=-1)
    with minigrad.no_grad():
        expected_output = merging(Tensor(x)).numpy()
        output = merging.reduction(merging.norm(Tensor(by_hand.reshape(2, 16, 128)))).numpy()
    assert numpy.allclose(output, expected_output, atol=1e-6)

    slots = image_labelled(axes_labelled(figures["patch_merging"], "photo under slots"), "slots")
    rows, cols = numpy.indices((8, 8))
    assert numpy.array_equal(slots, rows % 2 + 2 * (cols % 2))
    channel_texts = [text.get_text() for text in axes_labelled(figures["patch_merging"], "channels").texts]
    order = [next(k for k, text in enumerate(channel_texts) if text.startswith(slicing))
             for slicing in visualize_swin.SLOT_SLICES]
    assert order == sorted(order)


def test_complexity_points_are_the_models_flops_and_the_papers_formulas(fresh):
    args, figures = fresh
    layer_axes = axes_labelled(figures["complexity"], "stage 1 attention")
    model_axes = axes_labelled(figures["complexity"], "whole model")
    sizes = model_axes.lines[0].get_xdata()
    assert list(sizes) == [32, 64, 128, 256, 384]  # the sizes swin_mini takes from 32 px up
    for size, drawn in zip(sizes, model_axes.lines[0].get_ydata()):
        assert drawn == build("swin_mini", img_size=int(size), window_size=4, num_classes=11).flops()
    tokens, channels, window = (sizes / 4) ** 2, 32, 4
    lines = {line.get_label(): line for line in layer_axes.lines}
    global_points = lines["WindowAttention.flops, one window of all tokens"].get_ydata()
    window_points = lines["WindowAttention.flops x windows"].get_ydata()
    assert numpy.array_equal(global_points, 4 * tokens * channels**2 + 2 * tokens**2 * channels)
    assert numpy.array_equal(window_points, 4 * tokens * channels**2 + 2 * window**2 * tokens * channels)
    sides = lines["Omega(MSA), Eq. 1"].get_xdata() / 4
    assert numpy.allclose(lines["Omega(MSA), Eq. 1"].get_ydata(),
                          4 * sides**2 * channels**2 + 2 * sides**4 * channels)
    assert numpy.allclose(lines["Omega(W-MSA), Eq. 2"].get_ydata(),
                          4 * sides**2 * channels**2 + 2 * window**2 * sides**2 * channels)
    with_global = model_axes.lines[1].get_ydata()
    assert (with_global[1:] > model_axes.lines[0].get_ydata()[1:]).all()


def test_a_second_run_never_overwrites_the_first(tmp_path):
    out = tmp_path / "figures"
    first = main(["--img-size", str(SIZE), "--out", str(out)])
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    (tmp_path / "figures-2").mkdir()
    (tmp_path / "figures-2" / "notes.txt").write_text("someone else's")
    second = main(["--img-size", str(SIZE), "--out", str(out), "--seed", "1"])
    assert {path.parent for path in first.values()} == {out}
    assert {path.parent for path in second.values()} == {tmp_path / "figures-3"}
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert (tmp_path / "figures-2" / "notes.txt").read_text() == "someone else's"


def test_an_empty_folder_is_used_and_overwrite_replaces_only_this_scripts_figures(tmp_path):
    (tmp_path / "empty").mkdir()
    assert fresh_folder(tmp_path / "empty", overwrite=False) == tmp_path / "empty"
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "cyclic_shift.png").write_bytes(b"old")
    assert fresh_folder(figures, overwrite=True) == figures
    assert fresh_folder(figures, overwrite=False) == tmp_path / "figures-2"
    (figures / "summary.md").write_text("a training run's")
    with pytest.raises(FileExistsError, match="summary.md"):
        fresh_folder(figures, overwrite=True)


def test_overwrite_refuses_a_folder_with_other_files_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as stop:
        main(["--img-size", str(SIZE), "--out", str(tmp_path), "--overwrite"])
    assert stop.value.code == 2
    assert "config.json" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json"]


def test_a_photo_given_is_resized_cropped_and_drawn(tmp_path, fresh):
    path = tmp_path / "wide.png"
    pixels = numpy.random.default_rng(0).integers(0, 255, size=(40, 60, 3), dtype=numpy.uint8)
    Image.fromarray(pixels).save(path)
    photo = visualize_swin.load_photo(path, SIZE, seed=0)
    expected = numpy.asarray(Image.fromarray(pixels).resize((48, 32), Image.Resampling.BICUBIC))[:, 8:40]
    assert numpy.array_equal(photo, expected)


@pytest.mark.parametrize("content, message", [(None, "no such file"),
                                              (b"<html>not a photo</html>", "Pillow cannot")])
def test_a_bad_image_gives_a_clear_error(tmp_path, capsys, content, message):
    path = tmp_path / "car.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as stop:
        main(["--img-size", str(SIZE), "--image", str(path), "--out", str(tmp_path / "figures")])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and message in error and str(path) in error
    assert not (tmp_path / "figures").exists()


def test_a_checkpoint_of_another_model_gives_a_clear_error(tmp_path, capsys):
    path = tmp_path / "best.npz"
    save_checkpoint(path)
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(path), "--model", "swin_t", "--out", str(tmp_path / "figures")])
    error = capsys.readouterr().err
    assert "holds a swin_mini for 32 px" in error and "leave --model and --img-size out" in error

    save_checkpoint(path, img_size=64, model_img_size=SIZE)  # weights that do not fit what it says it is
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(path), "--out", str(tmp_path / "figures")])
    assert "shapes differ" in capsys.readouterr().err

    minigrad.save(build("swin_mini", img_size=SIZE).state_dict(), path)  # bare weights, no architecture
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(path), "--out", str(tmp_path / "figures")])
    assert "not a checkpoint of examples/train_*.py" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists()


@pytest.mark.parametrize("argv, message", [(["--stage", "1"], "choose one of the stages [0]"),
                                           (["--stage", "4"], "stages 0 to 3"),
                                           (["--block", "2"], "blocks 0 to 1"),
                                           (["--head", "1"], "heads 0 to 0"),
                                           (["--window", "4"], "windows 0 to 3"),
                                           (["--query", "16"], "tokens 0 to 15"),
                                           (["--img-size", "40"], "Sizes that fit")])
def test_choices_outside_the_model_are_refused_saying_what_may_be_chosen(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        main(["--img-size", str(SIZE), "--out", str(tmp_path / "figures"), *argv])
    assert message in capsys.readouterr().err


def test_help_shows_every_default(capsys):
    options = [action for action in make_parser()._actions if action.dest != "help"]
    names = {"image", "checkpoint", "out", "overwrite", "model", "img_size", "stage", "block", "head",
             "window", "query", "seed"}
    assert {action.dest for action in options} == names
    for action in options:
        assert "(default: " in action.help, action.dest
        if action.default is not None and not isinstance(action.default, bool):
            assert f"(default: {action.default})" in action.help, action.dest
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(default: runs/figures)" in " ".join(capsys.readouterr().out.split())

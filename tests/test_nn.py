"""nn: Module registration, naming, state dicts, devices and dtypes, the layers, and init."""
import math

import numpy as np
import pytest

import minigrad
from minigrad import backend, nn
from minigrad.nn import init


def host(array):
    return backend.asnumpy(array)


class Block(nn.Module):
    """A layer with a nested child, a persistent and a non-persistent buffer."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(2)
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.register_buffer("index", np.arange(4))
        self.register_buffer("table", np.full(2, 0.5, dtype=np.float32))
        self.register_buffer("cache", np.zeros(3, dtype=np.float32), persistent=False)

    def forward(self, x):
        return self.norm(self.proj(x)) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Block()
        self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Dropout(0.5)])
        self.head = nn.Linear(2, 1, bias=False)

    def forward(self, x):
        x = self.a(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


NET_KEYS = ["a.scale", "a.index", "a.table", "a.proj.weight", "a.proj.bias", "a.norm.weight", "a.norm.bias",
            "layers.0.weight", "layers.0.bias", "head.weight"]


# ---- registration and naming


def test_module_registers_parameters_modules_and_buffers():
    block = Block()
    assert set(block._parameters) == {"scale"}
    assert set(block._modules) == {"proj", "norm"}
    assert set(block._buffers) == {"index", "table", "cache"}
    assert "proj" not in vars(block) and "scale" not in vars(block)
    assert isinstance(block.proj, nn.Linear) and block.index.tolist() == [0, 1, 2, 3]
    block.label = "not registered"
    assert block.label == "not registered" and "label" not in block._parameters


def test_named_parameters_use_dotted_names():
    assert [name for name, _ in nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)).named_parameters()] \
        == ["0.weight", "0.bias", "2.weight", "2.bias"]

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential()
            self.a.b = nn.Linear(2, 2, bias=False)

    assert [name for name, _ in Outer().named_parameters()] == ["a.b.weight"]


def test_shared_parameters_and_modules_are_listed_once():
    tied = Tied()
    assert [name for name, _ in tied.named_parameters()] == ["encoder.weight", "encoder.bias"]
    assert tied.num_parameters() == 4 * 4 + 4
    assert len(list(tied.modules())) == 3


class Tied(nn.Module):
    """A decoder that is the encoder, and a third layer sharing its weight."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = self.encoder
        self.extra = nn.Linear(4, 4, bias=False)
        self.extra.weight = self.encoder.weight


def test_a_shared_module_is_keyed_under_each_name_in_the_state_dict():
    """torch's state_dict walks every name (Tied's keys in torch 2.x are these five), while
    named_parameters and named_modules list each object once."""
    tied = Tied()
    state = tied.state_dict()
    assert list(state) == ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias", "extra.weight"]
    np.testing.assert_array_equal(state["decoder.weight"], state["extra.weight"])
    assert [name for name, _ in tied.named_modules(remove_duplicate=False)] == ["", "encoder", "decoder", "extra"]
    assert tied.load_state_dict(Tied().state_dict()) == ([], [])  # strict: torch's checkpoint of it loads


def test_num_parameters():
    assert Net().num_parameters() == (3 * 2 + 2) + 2 + 2 + 1 + (2 * 2 + 2) + 2


def test_reassigning_an_attribute_unregisters_what_it_held():
    layer = nn.Linear(2, 2)
    layer.bias = None
    assert layer.bias is None and [name for name, _ in layer.named_parameters()] == ["weight"]
    block = Block()
    block.proj = nn.Parameter(np.zeros(2, dtype=np.float32))
    assert "proj" not in block._modules and isinstance(block.proj, nn.Parameter)
    assert sorted(block.state_dict()) == ["index", "norm.bias", "norm.weight", "proj", "scale", "table"]


@pytest.mark.parametrize("persistent", [True, False])
def test_assigning_a_parameter_or_module_to_a_buffers_name_replaces_the_buffer(persistent):
    """As torch's __setattr__, which removes the name from _buffers: the stale buffer must not shadow
    the parameter in state_dict, nor linger in named_buffers."""
    block = Block()
    block.register_buffer("table", np.full(2, 0.5, dtype=np.float32), persistent=persistent)
    block.table = nn.Parameter(np.array([3.0, 4.0], dtype=np.float32))
    assert dict(block.named_parameters())["table"] is block.table
    assert "table" not in dict(block.named_buffers())
    np.testing.assert_array_equal(block.state_dict()["table"], [3.0, 4.0])
    block.cache = nn.Identity()
    assert "cache" not in dict(block.named_buffers()) and block.cache is block._modules["cache"]
    block.register_buffer("cache", np.zeros(1), persistent=False)  # a buffer again, by its own call
    assert "cache" in dict(block.named_buffers()) and "cache" not in block.state_dict()


def test_a_buffer_registered_as_none_is_in_no_state_dict():
    """torch keeps a None buffer's name but leaves it out of state_dict and named_buffers."""
    block = Block()
    block.register_buffer("mask", None)
    assert block.mask is None and "mask" not in dict(block.named_buffers())
    assert sorted(block.state_dict()) == ["index", "norm.bias", "norm.weight", "proj.bias", "proj.weight", "scale",
                                          "table"]
    block.load_state_dict(Block().state_dict())  # strict: nothing is missing
    assert block.to(dtype="float64").mask is None


def test_re_registering_a_buffer_can_make_it_persistent():
    block = Block()
    block.register_buffer("cache", np.ones(3, dtype=np.float32))
    assert "cache" in block.state_dict()
    block.register_buffer("cache", np.ones(3, dtype=np.float32), persistent=False)
    assert "cache" not in block.state_dict()


def test_assigning_to_a_buffer_replaces_the_buffer():
    block = Block()
    block.table = np.array([3.0, 4.0], dtype=np.float32)
    np.testing.assert_array_equal(block.state_dict()["table"], [3.0, 4.0])
    assert "table" not in vars(block)
    block.note = 1.0
    block.register_buffer("note", np.array([2.0]))  # a plain attribute becomes a buffer
    assert block.note.tolist() == [2.0] and block.state_dict()["note"].tolist() == [2.0]


def test_forgetting_super_init_is_a_clear_error():
    class Forgetful(nn.Module):
        def __init__(self):
            self.weight = nn.Parameter(np.ones(2))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Forgetful()


def test_parameter_requires_grad():
    parameter = nn.Parameter(minigrad.tensor(np.ones(2)))
    assert parameter.requires_grad and isinstance(parameter, minigrad.Tensor)
    assert parameter.dtype == np.float64
    assert not nn.Parameter(np.ones(2), requires_grad=False).requires_grad  # a frozen weight, as torch's


def test_children_are_the_direct_children_only():
    """As torch's children()/named_children(): one level down, modules only (no parameters)."""
    net = Net()
    assert [name for name, _ in net.named_children()] == ["a", "layers", "head"]
    assert list(net.children()) == [net.a, net.layers, net.head]


def test_repr_nests_children_as_torch_prints_them():
    """torch's layout: "(name): " per child, each level indented two spaces; extra_repr inside the
    parentheses (torch adds elementwise_affine, bias and inplace, which have no counterpart here)."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.LayerNorm(3, eps=1e-6), nn.Linear(3, 1, bias=False)),
                          nn.Dropout(0.1))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "  (1): Sequential(\n"
        "    (0): LayerNorm(3, eps=1e-06)\n"
        "    (1): Linear(in_features=3, out_features=1, bias=False)\n"
        "  )\n"
        "  (2): Dropout(p=0.1)\n"
        ")")


# ---- state dicts


def test_state_dict_has_parameters_and_persistent_buffers():
    state = Net().state_dict()
    assert sorted(state) == sorted(NET_KEYS)
    assert "a.cache" not in state
    assert dict(Net().named_buffers())["a.cache"].shape == (3,)


def test_state_dict_arrays_are_fresh_host_copies(device):
    net = Net().to(device)
    state = net.state_dict()
    before = {name: host(p.data).copy() for name, p in net.named_parameters()}
    for key, value in state.items():
        assert type(value) is np.ndarray, key
        value[...] = 7
    for name, parameter in net.named_parameters():
        np.testing.assert_array_equal(host(parameter.data), before[name])
    assert host(net.a.index).tolist() == [0, 1, 2, 3]


def test_load_state_dict_round_trip(device):
    minigrad.manual_seed(1)
    source = Net()
    source.a.table = np.array([1.0, 2.0], dtype=np.float32)
    minigrad.manual_seed(2)
    target = Net().to(device)
    state = source.state_dict()
    result = target.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    loaded = target.state_dict()
    for key in NET_KEYS:
        np.testing.assert_array_equal(loaded[key], state[key])
        assert loaded[key].dtype == state[key].dtype
    assert backend.device_of(target.a.proj.weight.data) == device
    assert backend.device_of(target.a.table) == device
    state["head.weight"][...] = 0.0  # the model holds its own copy
    assert (host(target.head.weight.data) != 0.0).all()


def test_load_keeps_the_parameter_objects_and_the_models_dtype(device):
    """Optimizers hold the Parameter objects: loading must fill them, not replace them; and a
    float64 checkpoint loads into a float32 model as float32."""
    source, target = Net(), Net().to(device)
    parameters = dict(target.named_parameters())
    state = {key: value.astype(np.float64) if value.dtype == np.float32 else value
             for key, value in source.state_dict().items()}
    target.load_state_dict(state)
    for name, parameter in target.named_parameters():
        assert parameter is parameters[name], name
        assert parameter.dtype == np.float32 and parameter.device == device, name
        np.testing.assert_array_equal(host(parameter.data), source.state_dict()[name])
    assert target.a.table.dtype == np.float32


def test_strict_load_refuses_an_unexpected_key_alone():
    state = Net().state_dict()
    state["head.bias"] = np.zeros(1, dtype=np.float32)
    with pytest.raises(RuntimeError, match="head.bias"):
        Net().load_state_dict(state)


def test_strict_load_lists_missing_and_unexpected_keys():
    state = Net().state_dict()
    del state["head.weight"]
    state["head.bias"] = np.zeros(1, dtype=np.float32)
    with pytest.raises(RuntimeError) as error:
        Net().load_state_dict(state)
    assert "head.weight" in str(error.value) and "head.bias" in str(error.value)


def test_non_strict_load_returns_the_differences_and_loads_the_rest():
    source, target = Net(), Net()
    state = source.state_dict()
    del state["head.weight"]
    state["extra"] = np.zeros(2)
    missing, unexpected = target.load_state_dict(state, strict=False)
    assert missing == ["head.weight"] and unexpected == ["extra"]
    np.testing.assert_array_equal(target.a.proj.weight.data, source.a.proj.weight.data)
    assert not np.array_equal(target.head.weight.data, source.head.weight.data)


@pytest.mark.parametrize("damage", ["a key missing", "an unexpected key", "a shape"])
def test_a_refused_checkpoint_leaves_the_model_as_it_was(damage):
    """The keys and shapes are checked before anything is copied (the docstring's promise)."""
    model = Net()
    before = model.state_dict()
    state = {key: value + 1 if value.dtype.kind == "f" else value for key, value in Net().state_dict().items()}
    if damage == "a key missing":
        del state["head.weight"]
    elif damage == "an unexpected key":
        state["head.bias"] = np.zeros(1, dtype=np.float32)
    else:
        state["head.weight"] = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises((RuntimeError, ValueError)):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


@pytest.mark.parametrize("strict", [True, False])
def test_shape_mismatch_names_the_key_and_both_shapes(strict):
    state = Net().state_dict()
    state["a.proj.weight"] = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"a\.proj\.weight.*\(3, 2\).*\(2, 3\)"):
        Net().load_state_dict(state, strict=strict)


# ---- modes, dtypes, devices, gradients


def test_train_and_eval_reach_every_module():
    net = Net()
    assert net.eval() is net
    assert not any(module.training for module in net.modules())
    net.train()
    assert all(module.training for module in net.modules()) and len(list(net.modules())) == 8


def test_to_float64_casts_parameters_grads_and_float_buffers():
    net = Net()
    net(minigrad.tensor(np.ones((2, 3), dtype=np.float32))).sum().backward()
    assert net.to(dtype="float64") is net
    for name, parameter in net.named_parameters():
        assert parameter.dtype == np.float64 and parameter.grad.dtype == np.float64, name
    assert net.a.table.dtype == np.float64 and net.a.cache.dtype == np.float64
    assert net.a.index.dtype == np.arange(1).dtype  # integer buffers keep their type
    assert net(minigrad.tensor(np.ones((2, 3)))).dtype == np.float64


def test_to_device_moves_parameters_grads_and_buffers(device):
    net = Net()
    x = np.random.default_rng(0).random((2, 3)).astype(np.float32)
    net(minigrad.tensor(x)).sum().backward()
    expected = {name: (host(p.data).copy(), host(p.grad).copy()) for name, p in net.named_parameters()}
    net.to(device)
    for name, parameter in net.named_parameters():
        assert parameter.device == device and backend.device_of(parameter.grad) == device, name
        np.testing.assert_array_equal(host(parameter.data), expected[name][0])
        np.testing.assert_array_equal(host(parameter.grad), expected[name][1])
    for name, buffer in net.named_buffers():
        assert backend.device_of(buffer) == device, name
    out = net.eval()(minigrad.tensor(x, device=device))
    assert out.device == device
    net.to("cpu")
    assert all(p.device == "cpu" for p in net.parameters())


def test_to_keeps_the_parameter_objects(device):
    """An optimizer made before model.to(device) holds the Parameter objects: torch's Module.to moves
    their data in place, so moving and casting must not replace them."""
    net = Net()
    parameters = dict(net.named_parameters())
    net.to(device, dtype="float64")
    for name, parameter in net.named_parameters():
        assert parameter is parameters[name] and parameter.device == device and parameter.dtype == np.float64, name


def test_zero_grad():
    net = Net()
    net(minigrad.tensor(np.ones((1, 3)))).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_zero_grad_without_set_to_none_fills_the_same_arrays_with_zeros():
    net = Net()
    net(minigrad.tensor(np.ones((1, 3), dtype=np.float32))).sum().backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    net.zero_grad(set_to_none=False)
    for name, parameter in net.named_parameters():
        assert parameter.grad is grads[name], name
        assert not parameter.grad.any(), name


# ---- layers


def test_linear_shapes_init_bounds_and_forward(device):
    layer = nn.Linear(50, 40).to(device)
    weight, bias = host(layer.weight.data), host(layer.bias.data)
    assert weight.shape == (40, 50) and bias.shape == (40,) and weight.dtype == np.float32
    bound = 1 / math.sqrt(50)
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    assert np.abs(weight).max() > 0.95 * bound  # 2000 draws of U(-bound, bound) reach the edges
    x = np.random.default_rng(0).random((5, 50)).astype(np.float32)
    np.testing.assert_allclose(host(layer(minigrad.tensor(x, device=device)).data), x @ weight.T + bias,
                               rtol=1e-5, atol=1e-6)
    assert nn.Linear(3, 2, bias=False).bias is None


def test_linear_bias_is_uniform_within_one_over_sqrt_in_features(device):
    """torch's Linear.reset_parameters: bias ~ U(-1/sqrt(in), 1/sqrt(in)), mean 0, std bound/sqrt(3)."""
    bias = host(nn.Linear(16, 20_000).to(device).bias.data).astype(np.float64)
    bound = 1 / math.sqrt(16)
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.999 * bound
    assert_moments(bias, 0.0, bound / math.sqrt(3))


def test_layer_norm_default_eps_is_1e_5_and_the_size_is_checked(device):
    x = np.random.default_rng(0).uniform(-0.01, 0.01, (3, 5))  # a variance near eps, so eps shows
    norm = nn.LayerNorm(5).to(device, dtype="float64")
    expected = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(host(norm(minigrad.tensor(x, device=device)).data), expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"LayerNorm\(5\).*4"):
        norm(minigrad.tensor(np.ones((3, 4)), device=device))


def test_layer_norm_starts_as_ones_and_zeros():
    norm = nn.LayerNorm(5)
    np.testing.assert_array_equal(norm.weight.data, np.ones(5, dtype=np.float32))
    np.testing.assert_array_equal(norm.bias.data, np.zeros(5, dtype=np.float32))
    assert [name for name, _ in norm.named_parameters()] == ["weight", "bias"]


@pytest.mark.parametrize("layer", [nn.Dropout(0.5), nn.DropPath(0.5)])
def test_dropout_and_drop_path_are_identity_in_eval(layer, device):
    x = np.random.default_rng(0).random((16, 4, 8)).astype(np.float32) + 1.0
    layer.eval()
    np.testing.assert_array_equal(host(layer(minigrad.tensor(x, device=device)).data), x)
    layer.train()
    dropped = host(layer(minigrad.tensor(x, device=device)).data)
    assert (dropped == 0).any() and np.allclose(dropped[dropped != 0], 2 * x[dropped != 0])


def test_drop_path_drops_whole_samples():
    x = np.ones((64, 3, 5), dtype=np.float32)
    dropped = nn.DropPath(0.5)(minigrad.tensor(x)).data
    per_sample = dropped.reshape(64, -1)
    assert np.all((per_sample == 0).all(axis=1) | (per_sample == 2).all(axis=1))
    assert 0 < (per_sample == 0).all(axis=1).sum() < 64


def test_sequential_and_module_list_index_len_and_iterate():
    first, second, third = nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)
    for container in (nn.Sequential(first, second, third), nn.ModuleList([first, second]).append(third)):
        assert len(container) == 3
        assert container[0] is first and container[-1] is third and container[1] is second
        assert list(container) == [first, second, third]
        assert [name for name, _ in container.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = minigrad.tensor(np.ones((4, 2), dtype=np.float32))
    np.testing.assert_array_equal(nn.Sequential(first, second, third)(x).data, third(second(first(x))).data)


def test_slicing_sequential_and_module_list_keeps_their_type():
    first, second, third = nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)
    tail = nn.Sequential(first, second, third)[1:]
    assert type(tail) is nn.Sequential and list(tail) == [second, third]
    x = minigrad.tensor(np.ones((4, 3), dtype=np.float32))
    np.testing.assert_array_equal(tail(x).data, third(second(x)).data)
    head = nn.ModuleList([first, second, third])[:2]
    assert type(head) is nn.ModuleList and list(head) == [first, second]


def test_identity_returns_its_input():
    x = minigrad.tensor([1.0])
    assert nn.Identity()(x) is x


# ---- init


def normal_cdf(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def normal_pdf(z):
    return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def truncated_normal_moments(mean, std, a, b):
    """Mean and standard deviation of N(mean, std^2) conditioned on [a, b] (closed form)."""
    alpha, beta = (a - mean) / std, (b - mean) / std
    mass = normal_cdf(beta) - normal_cdf(alpha)
    shift = (normal_pdf(alpha) - normal_pdf(beta)) / mass
    variance = 1 + (alpha * normal_pdf(alpha) - beta * normal_pdf(beta)) / mass - shift ** 2
    return mean + std * shift, std * math.sqrt(variance)


def assert_moments(samples, mean, std):
    """Sample mean and std within 5 standard errors of the expected ones."""
    n = samples.size
    assert abs(samples.mean() - mean) < 5 * std / math.sqrt(n)
    fourth = ((samples - samples.mean()) ** 4).mean()
    std_error = math.sqrt((fourth - samples.var() ** 2) / n) / (2 * std)  # delta method for sqrt(var)
    assert abs(samples.std() - std) < 5 * std_error


@pytest.mark.parametrize("mean, std, a, b", [(0.0, 1.0, -1.0, 2.0), (0.5, 2.0, 0.0, 1.0), (0.0, 0.02, -2.0, 2.0),
                                        (0.0, 1.0, -10.0, 0.5)])  # cut on one side only
def test_trunc_normal_has_the_truncated_normal_distribution(mean, std, a, b, device):
    tensor = minigrad.tensor(np.zeros((200, 500), dtype=np.float32), device=device)
    assert init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b) is tensor
    samples = host(tensor.data)
    assert samples.dtype == np.float32 and tensor.device == device
    assert samples.min() >= a and samples.max() <= b
    assert_moments(samples.astype(np.float64), *truncated_normal_moments(mean, std, a, b))


def test_trunc_normal_needs_an_interval():
    with pytest.raises(ValueError):
        init.trunc_normal_(minigrad.tensor(np.zeros(3)), a=1.0, b=1.0)


@pytest.mark.parametrize("shape, fan_in", [((64, 30), 30), ((16, 8, 3, 3), 72), ((4, 3, 4, 4), 48)])
@pytest.mark.parametrize("a", [0.0, math.sqrt(5)])
def test_kaiming_uniform_bound(shape, fan_in, a, device):
    assert init.fan_in(shape) == fan_in
    tensor = minigrad.tensor(np.zeros(shape, dtype=np.float32), device=device)
    init.kaiming_uniform_(tensor, a=a)
    assert tensor.dtype == np.float32 and tensor.device == device
    samples = host(tensor.data).astype(np.float64)
    bound = math.sqrt(3) * math.sqrt(2 / (1 + a * a)) / math.sqrt(fan_in)
    assert np.abs(samples).max() <= bound * (1 + 1e-7)
    assert np.abs(samples).max() > 0.98 * bound  # 1920+ draws come that close to the edge
    assert abs(samples.mean()) < 5 * bound / math.sqrt(3 * samples.size)


def test_fan_in_needs_two_dimensions():
    with pytest.raises(ValueError):
        init.fan_in((5,))


def test_normal(device):
    tensor = minigrad.tensor(np.zeros(100_000, dtype=np.float32), device=device)
    init.normal_(tensor, mean=1.5, std=0.5)
    assert tensor.dtype == np.float32 and tensor.device == device
    assert_moments(host(tensor.data).astype(np.float64), 1.5, 0.5)


def test_uniform(device):
    tensor = minigrad.tensor(np.zeros(100_000, dtype=np.float64), device=device)
    init.uniform_(tensor, -1.0, 3.0)
    assert tensor.dtype == np.float64 and tensor.device == device
    samples = host(tensor.data)
    assert samples.min() >= -1.0 and samples.max() < 3.0
    assert_moments(samples, 1.0, 4.0 / math.sqrt(12))


@pytest.mark.parametrize("fill, value", [(init.zeros_, 0.0), (init.ones_, 1.0)])
def test_zeros_and_ones_overwrite_anything(fill, value, device):
    tensor = minigrad.tensor(np.array([np.nan, np.inf, -np.inf, 3.0], dtype=np.float32), device=device)
    assert fill(tensor) is tensor
    assert tensor.dtype == np.float32
    np.testing.assert_array_equal(host(tensor.data), np.full(4, value, dtype=np.float32))

"""convert / restore: what a user swapping layers into an existing model relies on."""

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import manual_backprop as mbp


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(self.fc1(x))


class Square(nn.Module):
    """A leaf module of the user's own that computes natively: what convert cannot swap."""

    def forward(self, x):
        return x * x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Sequential(nn.Linear(3, 2), nn.LogSoftmax(dim=-1))

    def forward(self, x):
        return self.head(self.encoder(x))


def test_convert_swaps_in_place_and_keeps_the_parameters():
    model = Net()
    params_before = dict(model.named_parameters())
    keys_before = list(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert mbp.convert(model) is model
    assert type(model.encoder.fc1) is mbp.nn.Linear and type(model.head[1]) is mbp.nn.LogSoftmax
    assert all(p is params_before[name] for name, p in model.named_parameters())
    assert list(model.state_dict()) == keys_before
    before = model.encoder.fc1.weight.detach().clone()
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()  # the optimizer built before the swap still moves the same tensors
    assert not torch.equal(before, model.encoder.fc1.weight)


def test_convert_swaps_the_root_module_itself():
    layer = nn.Linear(3, 2)
    assert mbp.convert(layer) is layer
    assert type(layer) is mbp.nn.Linear


def test_convert_is_idempotent_and_restore_swaps_back():
    model = mbp.convert(mbp.convert(Net()))
    assert type(model.encoder.fc1) is mbp.nn.Linear
    mbp.restore(model)
    assert type(model.encoder.fc1) is nn.Linear and type(model.head[0]) is nn.Linear
    assert not any(mbp.is_manual(m) for m in model.modules())
    assert all(not hasattr(m, "_manual_backprop_path") for m in model.modules())


def test_converted_model_deepcopies_pickles_and_loads_native_state():
    model = mbp.convert(Net())
    clone = copy.deepcopy(model)
    assert type(clone.encoder.fc1) is mbp.nn.Linear
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    native = Net()
    native.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 4)
    torch.testing.assert_close(native(x), model(x))


def test_identity_converts_and_hands_back_its_input():
    model = mbp.convert(nn.Sequential(nn.Identity()))
    x = torch.randn(3)
    assert type(model[0]) is mbp.nn.Identity and model(x) is x


def test_supported_modules_maps_native_to_manual():
    assert mbp.SUPPORTED_MODULES[nn.Linear] is mbp.nn.Linear
    assert all(issubclass(manual, native) for native, manual in mbp.SUPPORTED_MODULES.items())


def test_a_module_of_the_users_own_is_routed_not_reported():
    """Square computes natively with ``x * x``; converted, that product is the hand-written Mul."""
    model = nn.Sequential(nn.Linear(4, 3), Square())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mbp.convert(model, strict=True)
    out = model(torch.randn(2, 4))
    assert mbp.audit_backward(out, gradient=torch.ones_like(out)).ok


def test_fully_supported_model_converts_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mbp.convert(Net(), strict=True)


def test_example_inputs_must_be_a_tuple():
    with pytest.raises(TypeError, match=r"example_inputs must be a tuple.*example_inputs=\(x,\)"):
        mbp.convert(Net(), strict=True, example_inputs=torch.randn(2, 4))


@pytest.mark.parametrize("thing", [42, "model", torch.randn(2), [nn.Linear(2, 2)]])
def test_convert_rejects_what_is_not_a_module(thing):
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        mbp.convert(thing)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        mbp.restore(thing)


def test_a_subclass_of_a_manual_module_counts_as_manual():
    class Scaled(mbp.nn.Linear):
        pass

    model = nn.Sequential(Scaled(3, 2))
    mbp.convert(model, strict=True)
    with mbp.record_error_terms(model) as rec:
        model(torch.randn(4, 3)).sum().backward()
    assert rec["0"].shape == (4, 2)
    mbp.restore(model)
    assert type(model[0]) is Scaled  # the user's own class stays


def test_a_container_subclass_with_its_own_forward_and_parameters_is_routed():
    class Gated(nn.Sequential):
        def __init__(self):
            super().__init__(nn.Linear(3, 3))
            self.gate = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return super().forward(x) * self.gate

    model = mbp.convert(Gated(), strict=True)
    out = model(torch.randn(2, 3))
    assert mbp.audit_backward(out, gradient=torch.ones_like(out)).ok


# -- what a real model does to the converted layers ------------------------------------------------
class TiedLM(nn.Module):
    """An embedding whose weight the output layer shares (weight tying), and a layer used twice."""

    def __init__(self, vocab=7, width=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.act = nn.Tanh()
        self.out = nn.Linear(width, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens):
        h = self.act(self.mix(self.embed(tokens)))
        return self.out(self.act(self.mix(h)))


def _same_training_step(native, manual, *inputs):
    out_n, out_m = native(*inputs), manual(*inputs)
    torch.testing.assert_close(out_m, out_n, rtol=1e-10, atol=1e-12)
    out_n.sum().backward()
    out_m.sum().backward()
    for (name, p_n), (_, p_m) in zip(native.named_parameters(), manual.named_parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_tied_weights_and_a_layer_used_twice_match_native():
    native = TiedLM().double()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    assert manual.out.weight is manual.embed.weight
    _same_training_step(native, manual, torch.tensor([[1, 2, 3], [4, 5, 6]]))


def test_checkpointed_block_inside_a_converted_model_matches_native():
    from torch.utils.checkpoint import checkpoint

    class Checkpointed(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(4, 5), nn.Sigmoid(), nn.Linear(5, 4))
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(checkpoint(self.block, x, use_reentrant=False))

    native = Checkpointed().double()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    _same_training_step(native, manual, torch.randn(3, 4, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_forward_without_grad_works_and_records_nothing(context):
    model = mbp.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    x = torch.randn(5, 4)
    with context():
        out = model(x)
    assert out.grad_fn is None
    torch.testing.assert_close(out, mbp.restore(copy.deepcopy(model))(x).detach())


def test_hooks_registered_before_convert_keep_firing():
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    seen = []
    model[0].register_forward_hook(lambda m, args, out: seen.append("forward"))
    model[0].register_full_backward_hook(lambda m, grad_in, grad_out: seen.append("backward"))
    mbp.convert(model)
    model(torch.randn(2, 4, requires_grad=True)).sum().backward()
    assert seen == ["forward", "backward"]


def test_whole_converted_model_pickles_with_torch_save():
    model = mbp.convert(Net())
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded.encoder.fc1) is mbp.nn.Linear
    x = torch.randn(2, 4)
    torch.testing.assert_close(loaded(x), model(x))


def test_native_state_dict_loads_into_a_converted_model_and_back():
    native, manual = Net(), mbp.convert(Net())
    manual.load_state_dict(native.state_dict())
    other = Net()
    other.load_state_dict(manual.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(other(x), native(x))
    torch.testing.assert_close(manual(x), native(x))


def test_convert_keeps_dtype_device_and_train_mode():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.2)).double().eval()
    mbp.convert(model)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in model.parameters())
    assert not model.training and not model[1].training
    model.train()
    assert model[2].training

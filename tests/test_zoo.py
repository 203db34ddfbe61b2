"""The zoo (tests/zoo.py) converted: the same numbers as native, and (once every functional call and
tensor method in a forward is routed) a backward that is hand-written through and through.

For each model and dtype: build it with a fixed seed, convert a deep copy, run both on the same
inputs with the RNG seeded alike (so dropout draws the same masks), and compare outputs, every
parameter's gradient by name and every buffer (BatchNorm's running statistics). Then ask
``coverage`` and ``audit_backward`` whether anything native is left.
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch

import manual_backprop as mbp

from zoo import ZOO, Example

TOLERANCES = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}
DTYPES = pytest.mark.parametrize("dtype", list(TOLERANCES), ids=["float64", "float32"])
MODELS = pytest.mark.parametrize("name", list(ZOO))

def build(name: str, dtype: torch.dtype) -> tuple[Example, torch.nn.Module]:
    """The zoo model (seeded) and a converted deep copy of it."""
    torch.manual_seed(0)
    example = ZOO[name](dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing stays native, so nothing warns
        converted = mbp.convert(copy.deepcopy(example.model), strict=True)
    return example, converted


def run(model: torch.nn.Module, example: Example):
    torch.manual_seed(1)  # the same dropout masks in both models
    return model(*example.inputs, **example.kwargs)


@MODELS
@DTYPES
def test_converted_model_matches_native(name, dtype):
    example, converted = build(name, dtype)
    native = example.model
    assert any(mbp.is_manual(m) for m in converted.modules()) or not any(True for _ in native.children())
    out_native, out_manual = run(native, example), run(converted, example)
    torch.testing.assert_close(out_manual, out_native, **TOLERANCES[dtype])

    example.loss_fn(out_native).backward()
    example.loss_fn(out_manual).backward()
    grads_native = {n: p.grad for n, p in native.named_parameters()}
    grads_manual = {n: p.grad for n, p in converted.named_parameters()}
    assert grads_manual.keys() == grads_native.keys()
    for param_name, grad in grads_native.items():
        assert grad is not None, f"{name}: {param_name} got no gradient from the native model"
        torch.testing.assert_close(grads_manual[param_name], grad, **TOLERANCES[dtype],
                                   msg=lambda m, p=param_name: f"{name}: gradient of {p}: {m}")

    buffers_native = dict(native.named_buffers())
    assert dict(converted.named_buffers()).keys() == buffers_native.keys()
    for buffer_name, buffer in converted.named_buffers():
        torch.testing.assert_close(buffer, buffers_native[buffer_name], **TOLERANCES[dtype],
                                   msg=lambda m, b=buffer_name: f"{name}: buffer {b}: {m}")


def test_the_zoo_trains_as_its_authors_meant():
    """Dropout is on, batch norm learns its statistics, weights are tied where the source ties them."""
    models = {name: build(name, torch.float64)[1] for name in ZOO}
    assert all(model.training for model in models.values())
    gpt = models["GPT"]
    assert gpt.transformer.wte.weight is gpt.lm_head.weight
    assert gpt.config.dropout > 0 and models["TransformerEncoderModel"].pos_encoder.dropout.p > 0
    resnet = models["ResNet"]
    before = resnet.bn1.running_mean.clone()
    example = ZOO["ResNet"](torch.float64)
    resnet(*example.inputs)
    assert not torch.equal(resnet.bn1.running_mean, before)


@MODELS
@DTYPES
def test_every_backward_node_is_hand_written(name, dtype):
    example, converted = build(name, dtype)
    torch.manual_seed(1)
    report = mbp.coverage(converted, *example.inputs, **example.kwargs)
    assert report.ok and report.hand_written_share == 1.0, f"{name} ({dtype}):\n{report}"


@MODELS
@DTYPES
def test_the_audit_passes_on_the_loss(name, dtype):
    example, converted = build(name, dtype)
    audit = mbp.audit_backward(example.loss_fn(run(converted, example)))
    assert audit.ok, f"{name} ({dtype}):\n{audit}"


#: compiled, the converted TransformerEncoder draws its dropout masks in another order than eager does (its compiled
#: native twin does not): the same statistics, other masks. Compared in eval mode, where no mask is drawn.
DRAWS_IN_ANOTHER_ORDER_WHEN_COMPILED = {"TransformerEncoderModel"}


#: compiling takes 10 s to 3 min a model on 2 CPU cores: CI compiles these four (an MLP, attention, a functional
#: model, nn.TransformerEncoder); the other four passed too when last run by hand with COMPILE_ALL=1
COMPILED_IN_CI = ["MLP", "GPT", "FunctionalNet", "TransformerEncoderModel"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO) if os.environ.get("COMPILE_ALL") else COMPILED_IN_CI)
def test_compiled_converted_model_has_the_gradients_of_native(name):
    """``torch.compile`` of a converted model traces through the routing into the same hand-written
    Functions; with inductor drawing random numbers as eager does, dropout masks and gradients agree."""
    import torch._inductor.config

    example, converted = build(name, torch.float64)
    if name in DRAWS_IN_ANOTHER_ORDER_WHEN_COMPILED:
        example.model.eval()
        converted.eval()
    compiled = torch.compile(converted)
    with torch._inductor.config.patch(fallback_random=True):
        out_compiled = run(compiled, example)
    out_native = run(example.model, example)
    torch.testing.assert_close(out_compiled, out_native, **TOLERANCES[torch.float64])
    example.loss_fn(out_compiled).backward()
    example.loss_fn(out_native).backward()
    for (param_name, p_m), p_n in zip(converted.named_parameters(), example.model.parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, **TOLERANCES[torch.float64],
                                   msg=lambda m, p=param_name: f"{name}: gradient of {p}: {m}")

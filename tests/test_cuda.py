"""The layer table on a GPU, and Lightning's mixed precision there: runs where CUDA is present, skipped elsewhere.

    .venv/bin/python -m pytest tests/test_cuda.py     # on a machine with a GPU
"""

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.nn.utils.rnn import PackedSequence
from torch.utils._pytree import tree_leaves, tree_map

import manual_backprop as mbp
from lightning_modules import DigitsDataModule, ManualBackpropModule
from manual_backprop.audit import backward_graph

from cases import MODULE_CASES, native_model
from zoo import ZOO

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def full_float32():
    """TF32 (cuDNN convolutions and RNNs use it by default) rounds products to 10 bits: two correct
    float32 computations then differ by ~1e-3. The comparisons here are about the formulas."""
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        matmul = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _on_cuda(t):
    if isinstance(t, PackedSequence):
        return t.to("cuda").float()
    if not isinstance(t, torch.Tensor):
        return t
    moved = t.detach().to("cuda", torch.float32 if t.is_floating_point() else t.dtype)
    return moved.requires_grad_(t.requires_grad)


def _native_call(case, native, inputs):
    """torch's cuDNN RNNs draw dropout masks of their own and cannot backpropagate in eval mode; their
    generic implementation (cuDNN off) does neither, so it is the reference for the recurrent layers."""
    if not case.id.startswith("recurrent-"):
        return native(*inputs)
    with torch.backends.cudnn.flags(enabled=False):
        return native(*inputs)


@pytest.mark.parametrize("case", MODULE_CASES, ids=[c.id for c in MODULE_CASES])
def test_module_case_on_cuda_matches_native(case):
    if case.id.startswith("recurrent-") and "dropout" in case.id and case.train:
        pytest.skip("torch's CUDA RNNs draw their dropout masks with a fused kernel of their own (docs/layers.md)")
    native = case.make().to("cuda", torch.float32).train(case.train)
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    made = case.inputs()
    x_m = [_on_cuda(t) for t in made]
    x_n = [_on_cuda(t) for t in made]
    torch.manual_seed(1)
    out_m = manual(*x_m)
    torch.manual_seed(1)
    out_n = _native_call(case, native, x_n)
    torch.testing.assert_close(out_m, out_n, rtol=1e-4, atol=1e-4)
    outs_m = [t for t in tree_leaves(out_m) if isinstance(t, torch.Tensor) and t.requires_grad]
    outs_n = [t for t in tree_leaves(out_n) if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = [torch.randn_like(t) for t in outs_n]
    if case.id.startswith("recurrent-"):
        with torch.backends.cudnn.flags(enabled=False):
            torch.autograd.backward(outs_n, grads)
    else:
        torch.autograd.backward(outs_n, grads)
    audit = mbp.audit_backward(outs_m, gradient=grads)
    assert audit.ok, str(audit)
    for p_m, p_n in zip(manual.parameters(), native.parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_training_step_on_cuda_matches_native(dtype):
    native = native_model("relu").float().cuda()
    manual = mbp.convert(copy.deepcopy(native))
    x, y = torch.randn(32, 5, device="cuda"), torch.randint(0, 3, (32,), device="cuda")
    for model, ce in [(native, torch.nn.functional.cross_entropy), (manual, mbp.functional.cross_entropy)]:
        with torch.autocast("cuda", dtype=dtype):
            loss = ce(model(x).float(), y)
        loss.backward()
    for p_m, p_n in zip(manual.parameters(), native.parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, rtol=2e-2, atol=2e-2)


def test_convert_a_model_already_on_cuda_keeps_it_there():
    model = mbp.convert(native_model("tanh").cuda())
    assert all(p.device.type == "cuda" for p in model.parameters())
    out = model(torch.randn(4, 5, device="cuda", dtype=torch.float64))
    assert out.device.type == "cuda"


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_already_on_cuda_converts_and_matches_native(name):
    """A model moved to the GPU first and converted there: same numbers as native, all hand-written."""
    torch.manual_seed(0)
    example = ZOO[name](torch.float64)
    native = example.model.cuda()
    manual = mbp.convert(copy.deepcopy(native), strict=True)
    assert all(p.device.type == "cuda" for p in manual.parameters())
    inputs, kwargs = tree_map(_to_cuda, (example.inputs, example.kwargs))
    if name == "BatchedLSTMTagger":
        inputs = (inputs[0], example.inputs[1])  # torch wants the lengths of a packed sequence on the CPU
    with torch.backends.cudnn.flags(enabled=False):  # torch's generic RNNs: the dropout masks of ours
        torch.manual_seed(1)
        out_n = native(*inputs, **kwargs)
        torch.manual_seed(1)
        out_m = manual(*inputs, **kwargs)
        torch.testing.assert_close(out_m, out_n, rtol=1e-8, atol=1e-10)
        outs_n = [t for t in tree_leaves(out_n) if isinstance(t, torch.Tensor) and t.requires_grad]
        outs_m = [t for t in tree_leaves(out_m) if isinstance(t, torch.Tensor) and t.requires_grad]
        grads = [torch.randn_like(t) for t in outs_n]
        torch.autograd.backward(outs_n, grads)
        audit = mbp.audit_backward(outs_m, gradient=grads)
    assert audit.ok, str(audit)
    for (param, p_m), p_n in zip(manual.named_parameters(), native.parameters()):
        torch.testing.assert_close(p_m.grad, p_n.grad, rtol=1e-8, atol=1e-10, msg=lambda m, p=param: f"{p}: {m}")


def _to_cuda(t):
    return t.cuda() if isinstance(t, torch.Tensor) else t


# -- Lightning on one GPU: 16-mixed and bf16-mixed ---------------------------------------------------
class _MixedPrecisionSpy(pl.Callback):
    """The dtypes of the network's output and the native nodes of every backward graph of a fit."""

    def __init__(self):
        self.dtypes: set[torch.dtype] = set()
        self.native_nodes: list[set[str]] = []

    def on_fit_start(self, trainer, pl_module):
        pl_module.network.register_forward_hook(lambda module, inputs, output: self.dtypes.add(output.dtype))

    def on_before_backward(self, trainer, pl_module, loss):
        self.native_nodes.append({name for name in backward_graph(loss) if name.endswith("(native)")})


#: precision → (the network output's dtype, the native nodes of each backward graph): Lightning divides
#: the loss by accumulate_grad_batches (C/1), and under 16-mixed its GradScaler multiplies it by the scale
CUDA_MIXED_PRECISION = {
    "16-mixed": (torch.float16, {"DivBackward0 (native)", "MulBackward0 (native)"}),
    "bf16-mixed": (torch.bfloat16, {"DivBackward0 (native)"}),
}


@pytest.mark.parametrize("precision", list(CUDA_MIXED_PRECISION))
def test_lightning_mixed_precision_on_cuda_learns_the_digits(precision):
    """The default digits network, 3 epochs on one GPU with a real Trainer: over 85 % (``-s`` prints it).

    autocast ran on the GPU (the output has the low-precision dtype), the weights stayed float32 on
    the GPU, and every backward graph is hand-written but for Lightning's scaling of the loss.
    """
    dtype, native_nodes = CUDA_MIXED_PRECISION[precision]
    pl.seed_everything(0)
    module, data, spy = ManualBackpropModule(), DigitsDataModule(), _MixedPrecisionSpy()
    trainer = pl.Trainer(accelerator="cuda", devices=1, precision=precision, max_epochs=3, callbacks=[spy],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, data)
    (results,) = trainer.validate(module, data, verbose=False)
    print(f"\n{precision} on {torch.cuda.get_device_name()}, digits, 3 epochs: validation accuracy "
          f"{results['val_acc']:.1%}")
    assert spy.dtypes == {dtype}
    assert spy.native_nodes == [native_nodes] * (3 * 45)
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in module.parameters())
    assert trainer.global_step == 3 * 45
    assert results["val_acc"] > 0.85


def test_error_term_logger_divides_the_grad_scalers_factor_out_of_delta(tmp_path):
    """Under 16-mixed the loss is multiplied by the GradScaler's factor (65,536 at the start) before
    backward, and so is every δ; the logger divides it out: the first step's logged δ RMS is that of a
    32-bit run, within float16's precision, not 65,536 times it."""
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_modules import ErrorTermLogger

    from tb import read_events

    rms = {}
    for precision in ("32-true", "16-mixed"):
        pl.seed_everything(0)
        trainer = pl.Trainer(accelerator="cuda", devices=1, precision=precision, max_steps=1,
                             logger=TensorBoardLogger(tmp_path, name=precision), enable_checkpointing=False,
                             callbacks=[ErrorTermLogger(every_n_steps=1)], enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
        trainer.fit(ManualBackpropModule(), DigitsDataModule())
        if precision == "16-mixed":
            assert trainer.precision_plugin.scaler is not None
        events = read_events(trainer.logger.log_dir)
        rms[precision] = {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]
                          if tag.startswith("error_terms_rms/")}
    assert sorted(rms["16-mixed"]) == sorted(rms["32-true"]) == ["error_terms_rms/fc1", "error_terms_rms/fc2"]
    for tag, value in rms["32-true"].items():
        assert rms["16-mixed"][tag] == pytest.approx(value, rel=2e-2), tag

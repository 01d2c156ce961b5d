"""pgolf.model.fused: the Triton kernels against their PyTorch references (forward and backward).

The kernel cases run on CUDA where it is present, and on the CPU under Triton's interpreter: the interpreter
is chosen when triton is imported, so :func:`test_kernels_under_the_interpreter` runs this file again in a
subprocess with ``TRITON_INTERPRET=1`` (where the cases run on the CPU and that test skips itself). Without
triton every kernel case skips; the switch's own behaviour (errors, the ``auto`` fallback) is tested here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.errors import ConfigError

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
try:
    import triton  # noqa: F401

    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False

if torch.cuda.is_available():
    DEVICE = "cuda"
elif INTERPRET:
    DEVICE = "cpu"
else:
    DEVICE = None
kernels = pytest.mark.skipif(not HAVE_TRITON or DEVICE is None,
                             reason="needs triton and CUDA, or TRITON_INTERPRET=1 (run by the subprocess test)")
DTYPES = [torch.float32, torch.bfloat16]
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def _fused():
    from pgolf.model import fused

    return fused


@pytest.mark.skipif(INTERPRET or not HAVE_TRITON, reason="the subprocess itself, or no triton")
def test_kernels_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", __file__],
                       cwd=Path(__file__).parent.parent, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) >= 40, r.stdout[-2000:]  # every kernel case ran, none skipped


# --------------------------------------------------------------------------- softcapped cross-entropy


@kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("softcap", [30.0, 0.0, 2.0])
@pytest.mark.parametrize("shape", [(1, 3), (7, 64), (5, 200)])
def test_softcap_ce_matches_reference(shape, softcap, dtype):
    f = _fused()
    g = torch.Generator().manual_seed(sum(shape))
    N, V = shape
    z = (torch.randn(N, V, generator=g) * 8).to(DEVICE, dtype)  # large enough that a cap of 2 saturates
    t = torch.randint(0, V, (N,), generator=g).to(DEVICE)
    w = torch.rand(N, generator=g).to(DEVICE)  # a non-uniform upstream gradient
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    got, ref = f.softcap_ce(z1, t, softcap), f.reference_softcap_ce(z2, t, softcap)
    assert got.dtype == torch.float32 and got.shape == (N,)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)  # fp32 maths on the same inputs
    (got * w).sum().backward()
    (ref * w).sum().backward()
    assert z1.grad.dtype == dtype
    torch.testing.assert_close(z1.grad.float(), z2.grad.float(), **TOL[dtype])


@kernels
def test_softcap_ce_ignore_index_and_strided_rows():
    f = _fused()
    g = torch.Generator().manual_seed(0)
    big = torch.randn(6, 100, generator=g).to(DEVICE)
    z = big[:, :70]  # rows with a stride larger than V
    t = torch.tensor([3, -100, 69, 0, -100, 5], device=DEVICE)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    got = f.softcap_ce(z1, t, 30.0)
    ref = torch.nn.functional.cross_entropy(30 * torch.tanh(z2 / 30), t, reduction="none")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert got[1] == 0 and got[4] == 0
    got.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, atol=1e-6, rtol=1e-5)
    assert (z1.grad[1] == 0).all()
    # strided input (not a contiguous copy) gives the same numbers
    torch.testing.assert_close(f.softcap_ce(z, t, 30.0), got.detach())


# --------------------------------------------------------------------------- LeakyReLU² MLP


@kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [0.5, 0.0])
@pytest.mark.parametrize("shape", [(3,), (4, 77), (2, 5, 130)])
def test_leaky_relu2_matches_reference(shape, slope, dtype):
    f = _fused()
    g = torch.Generator().manual_seed(len(shape))
    h = torch.randn(*shape, generator=g).to(DEVICE, dtype)
    gy = torch.randn(*shape, generator=g).to(DEVICE, dtype)
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    y1, y2 = f.leaky_relu2(h1, slope), f.reference_leaky_relu2(h2, slope)
    torch.testing.assert_close(y1, y2, **TOL[dtype])
    y1.backward(gy)
    y2.backward(gy)
    torch.testing.assert_close(h1.grad, h2.grad, **TOL[dtype])


@kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [0.5, 0.0])
@pytest.mark.parametrize("mkn", [(5, 24, 40), (2 * 17, 16, 33)])
def test_linear_leaky_relu2_matches_reference(mkn, slope, dtype):
    f = _fused()
    M, K, N = mkn
    g = torch.Generator().manual_seed(M)
    x = torch.randn(M, K, generator=g).to(DEVICE, dtype)
    w = (torch.randn(N, K, generator=g) / K**0.5).to(DEVICE, dtype)
    gy = torch.randn(M, N, generator=g).to(DEVICE, dtype)
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()  # the model's path, same dtype
    x3, w3 = x.double().requires_grad_(), w.double().requires_grad_()  # the exact answer
    y1, y2 = f.linear_leaky_relu2(x1, w1, slope), f.reference_linear_leaky_relu2(x2, w2, slope)
    y3 = f.reference_linear_leaky_relu2(x3, w3, slope)
    assert y1.dtype == dtype
    for y in (y1, y2, y3):
        y.backward(gy.to(y.dtype))
    for got, ref, exact in ((y1, y2, y3), (x1.grad, x2.grad, x3.grad), (w1.grad, w2.grad, w3.grad)):
        _no_worse(got, ref, exact, dtype)


def _no_worse(got, ref, exact, dtype):
    """fp32: ``got`` equals the reference; bf16: its error from the float64 answer is within twice the
    reference's own (plus one bf16 ulp of the scale): the kernel is no less accurate than the model's path."""
    if dtype == torch.float32:
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        return
    e_got = (got.double() - exact.detach()).abs().max().item()
    e_ref = (ref.double() - exact.detach()).abs().max().item()
    assert e_got <= 2 * e_ref + 2**-8 * exact.abs().max().item(), (e_got, e_ref)


# --------------------------------------------------------------------------- the switch in the model


def _tiny(**kw) -> ModelConfig:
    return ModelConfig(vocab_size=96, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1,
                       mlp_act="leaky_relu2", **kw)


def _loss_and_grads(cfg: ModelConfig, device: str, idx, tgt):
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    m = GPT(cfg).to(device)
    for p in m.parameters():  # the zero-initialised projections would hide the MLP's gradient
        torch.nn.init.normal_(p, std=0.1)
    loss = m(idx, tgt)
    loss.backward()
    with torch.no_grad():
        ev = m(idx, tgt, reduction="none")
    return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}, ev


@kernels
@pytest.mark.parametrize("chunk", [0, 5])
def test_model_fused_on_matches_off(chunk):
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 96, (2, 12), generator=g).to(DEVICE)
    tgt = torch.randint(0, 96, (2, 12), generator=g).to(DEVICE)
    l0, g0, e0 = _loss_and_grads(_tiny(ce_chunk_tokens=chunk), DEVICE, idx, tgt)
    l1, g1, e1 = _loss_and_grads(_tiny(ce_chunk_tokens=chunk, fused_kernels="on"), DEVICE, idx, tgt)
    torch.testing.assert_close(l1, l0, atol=1e-5, rtol=1e-5)
    assert g1.keys() == g0.keys()
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-4, rtol=1e-4, msg=n)
    assert torch.equal(e1, e0)  # evaluation (no gradients) keeps the model's own path: the same bits


@pytest.mark.skipif(INTERPRET or torch.cuda.is_available(), reason="the CPU without the interpreter")
def test_on_without_cuda_is_one_clear_error_and_auto_is_the_reference():
    idx = torch.randint(0, 96, (1, 8))
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="fused_kernels=on needs triton"):
        GPT(_tiny(fused_kernels="on"))(idx, idx)
    l0, g0, e0 = _loss_and_grads(_tiny(), "cpu", idx, idx)
    l1, g1, e1 = _loss_and_grads(_tiny(fused_kernels="auto", ce_chunk_tokens=3), "cpu", idx, idx)
    l2, _, _ = _loss_and_grads(_tiny(ce_chunk_tokens=3), "cpu", idx, idx)
    assert torch.equal(l0, _loss_and_grads(_tiny(fused_kernels="auto"), "cpu", idx, idx)[0])
    assert torch.equal(l1, l2)


@pytest.mark.skipif(INTERPRET, reason="run once, in the parent process")
def test_bundle_leaves_the_module_out_when_off():
    from pgolf.bundler import select_modules
    from pgolf.config import RunConfig

    off = select_modules(RunConfig())
    on = select_modules(RunConfig(model=_tiny(fused_kernels="auto")))
    assert "pgolf.model.fused" not in off.modules and "pgolf.model.fused" in on.modules


@pytest.mark.skipif(not torch.cuda.is_available() or not HAVE_TRITON, reason="CUDA only")
def test_compiled_model_with_fused_kernels_matches_eager():
    from pgolf.model.gpt import GPT

    cfg = _tiny(fused_kernels="on")
    torch.manual_seed(0)
    m = GPT(cfg).cuda()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    idx = torch.randint(0, 96, (2, 16), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = m(idx, idx)
        compiled = torch.compile(m, fullgraph=False)(idx, idx)
    torch.testing.assert_close(compiled, eager, atol=2e-2, rtol=2e-2)

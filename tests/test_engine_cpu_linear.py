"""The decode-friendly linear layers: same numbers as nn.Linear, applied only where they help."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxk.engine import blas, cpu_linear

blas.setup()  # before mlx is imported, as the engine does

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")


def _pair(bias: bool):
    mx.random.seed(0)
    ref = nn.Linear(64, 48, bias=bias)
    fast = nn.Linear(64, 48, bias=bias)
    fast.update(ref.parameters())
    assert cpu_linear.enable(fast) == 1
    return ref, fast


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 64), (3, 64), (8, 1, 64), (6, 1, 64), (2, 5, 64), (40, 64), (4, 9, 64)])
def test_same_result_as_nn_linear(bias, shape):
    ref, fast = _pair(bias)
    assert type(fast).__name__ == "DecodeLinear"
    x = mx.random.normal(shape)
    want, got = ref(x), fast(x)
    assert got.shape == want.shape == (*shape[:-1], 48)
    assert mx.allclose(got, want, rtol=1e-5, atol=1e-5).item()


def test_only_plain_fp32_linear_layers_on_the_cpu_change(monkeypatch):
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64), nn.Embedding(10, 64))
    model.layers[1].set_dtype(mx.float16)
    quant = nn.QuantizedLinear(64, 64, bits=8, group_size=64)
    assert cpu_linear.enable(model) == 1
    assert type(model.layers[0]).__name__ == "DecodeLinear"
    assert type(model.layers[1]) is nn.Linear and type(model.layers[2]) is nn.Embedding
    assert cpu_linear.enable(quant) == 0 and type(quant) is nn.QuantizedLinear

    monkeypatch.setenv("MLXK_DECODE_GEMM", "off")
    assert cpu_linear.enable(nn.Linear(8, 8)) == 0


def test_loader_applies_it_to_the_real_model(demo_model_dir: Path):
    from mlxk.engine.loader import load

    model = load(demo_model_dir).model
    names = {type(m).__name__ for _, m in model.named_modules()}
    assert "DecodeLinear" in names and "Linear" not in names
    # 6 rows take the decode product, 4 x 6 rows the plain GEMM: the same next token
    prompt = mx.array([[1, 2, 3, 4, 5, 6]])
    alone = mx.argmax(model(prompt)[:, -1, :], axis=-1).item()
    batch = mx.argmax(model(mx.concatenate([prompt] * 4))[:, -1, :], axis=-1).tolist()
    assert batch == [alone] * 4

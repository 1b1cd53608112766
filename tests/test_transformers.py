"""The transformers (`ltcli.models.vit`, `ltcli.models.gpt`): shapes, parameter naming and
what is prunable, causality, pruned heads, initialization and dropout. Tiny configurations,
so that each test compiles in a second or two on CPU."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltcli import models
from ltcli.models.gpt import GPT
from ltcli.models.transformer import SelfAttention
from ltcli.models.vit import ViT
from ltcli.science import pruning

pytestmark = pytest.mark.unit

DEPTH, WIDTH, HEADS, CONTEXT, VOCAB, CLASSES = 2, 16, 2, 8, 11, 5
TINY = dict(depth=DEPTH, width=WIDTH, heads=HEADS, mlp_ratio=2)
IMAGES = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
TOKENS = jax.random.randint(jax.random.key(2), (3, CONTEXT), 0, VOCAB)
ATTN = ("attn_q", "attn_k", "attn_v", "attn_out")
LAYERS = (*ATTN, "mlp_fc1", "mlp_fc2")


def vit(pool: str = "cls", dropout: float = 0.0, **arch) -> ViT:
    return ViT(CLASSES, dropout, **(TINY | dict(patch_size=4, pool=pool) | arch))


def gpt(tied: bool = True, dropout: float = 0.0, **arch) -> GPT:
    return GPT(VOCAB, dropout, **(TINY | dict(context=CONTEXT, tied=tied) | arch))


def init(model, x) -> dict:
    return model.init({"params": jax.random.key(0)}, jnp.zeros(x.shape, jnp.float32))


def flat(params) -> dict[str, np.ndarray]:
    """`params` flattened into writable numpy copies."""
    return {k: np.array(v) for k, v in pruning.leaves(params).items()}


def with_random_head(variables: dict) -> dict:
    """`variables` with ViT's zero-initialized head made random, so gradients and dropout
    reach the logits; a no-op for models without a dense head."""
    params = flat(variables["params"])
    if "head/kernel" in params and not params["head/kernel"].any():
        shape = params["head/kernel"].shape
        params["head/kernel"] = np.asarray(jax.random.normal(jax.random.key(4), shape))
    return {"params": pruning.unflatten(params)}


def case(name: str):
    """A (model, input) pair by name."""
    return {
        "vit_cls": (vit("cls"), IMAGES),
        "vit_mean": (vit("mean"), IMAGES),
        "gpt_tied": (gpt(True), TOKENS),
        "gpt_untied": (gpt(False), TOKENS),
    }[name]


CASES = ("vit_cls", "vit_mean", "gpt_tied", "gpt_untied")


@pytest.mark.parametrize("name", CASES)
def test_output_shape_and_dtype(name):
    model, x = case(name)
    out = model.apply(init(model, x), x, train=False)
    expected = (3, CLASSES) if name.startswith("vit") else (3, CONTEXT, VOCAB)
    assert out.shape == expected
    assert out.dtype == jnp.float32
    assert jnp.isfinite(out).all()


def test_gpt_reads_any_numeric_dtype_and_shorter_inputs():
    model = gpt()
    variables = init(model, TOKENS)
    as_int = model.apply(variables, TOKENS, train=False)
    as_float = model.apply(variables, TOKENS.astype(jnp.float32), train=False)
    np.testing.assert_array_equal(as_int, as_float)
    short = model.apply(variables, TOKENS[:, :5], train=False)
    assert short.shape == (3, 5, VOCAB)
    np.testing.assert_allclose(short, as_int[:, :5], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="context"):
        model.apply(variables, jnp.zeros((1, CONTEXT + 1)), train=False)


def test_vit_rejects_bad_shapes():
    with pytest.raises(ValueError, match="patch_size"):
        init(vit(), jnp.zeros((1, 10, 8, 3)))
    with pytest.raises(ValueError, match="heads"):
        init(vit(heads=3), IMAGES)
    with pytest.raises(ValueError, match="pool"):
        init(vit("max"), IMAGES)
    with pytest.raises(ValueError, match="heads"):
        init(gpt(heads=3), TOKENS)


def test_vit_parameter_layout():
    params = init(vit("cls"), IMAGES)["params"]
    shapes = {k: v.shape for k, v in flat(params).items()}
    assert shapes["patch_embed/kernel"] == (4 * 4 * 3, WIDTH)
    assert shapes["cls"] == (1, 1, WIDTH)
    assert shapes["pos_embed"] == (1, 1 + 4, WIDTH)  # the class token and 2x2 patches
    assert shapes["head/kernel"] == (WIDTH, CLASSES)
    for layer in ATTN:
        assert shapes[f"block1/{layer}/kernel"] == (WIDTH, WIDTH)
    assert shapes["block0/mlp_fc1/kernel"] == (WIDTH, 2 * WIDTH)
    assert shapes["block0/mlp_fc2/kernel"] == (2 * WIDTH, WIDTH)
    assert {"block0/ln1/scale", "block0/ln2/scale", "ln_f/scale"} <= set(shapes)
    mean = flat(init(vit("mean"), IMAGES)["params"])
    assert "cls" not in mean
    assert mean["pos_embed"].shape == (1, 4, WIDTH)


def test_gpt_parameter_layout():
    tied = flat(init(gpt(True), TOKENS)["params"])
    untied = flat(init(gpt(False), TOKENS)["params"])
    assert tied["embed/embedding"].shape == (VOCAB, WIDTH)
    assert tied["pos_embed"].shape == (CONTEXT, WIDTH)
    assert not any(k.startswith("head") for k in tied)
    assert untied["head/kernel"].shape == (WIDTH, VOCAB)
    assert "head/bias" not in untied
    assert set(untied) - set(tied) == {"head/kernel"}


@pytest.mark.parametrize("name", CASES)
def test_prunable_layers_are_exactly_attention_and_mlp_kernels(name):
    model, x = case(name)
    params = init(model, x)["params"]
    names = pruning.leaves(params)
    prunable = pruning.prunable_layers(params)
    expected = {
        f"block{i}/{layer}/kernel": "mlp" if layer.startswith("mlp") else "attn"
        for i in range(DEPTH)
        for layer in LAYERS
    }
    assert prunable == expected
    not_prunable = set(names) - set(prunable)
    assert all(
        not k.endswith("kernel") or k.split("/")[-2] in ("head", "patch_embed")
        for k in not_prunable
    )
    for k in ("pos_embed", "ln_f/scale", "block0/ln1/scale", "block0/attn_q/bias"):
        assert k in not_prunable
    assert ("embed/embedding" in not_prunable) == name.startswith("gpt")
    assert ("patch_embed/kernel" in not_prunable) == name.startswith("vit")
    assert ("cls" in not_prunable) == (name == "vit_cls")
    assert ("head/kernel" in not_prunable) == (name != "gpt_tied")


@pytest.mark.parametrize("name", ["vit", "gpt"])
def test_registry_kernels_match_the_default_model(name):
    definition = models.get(name)
    variables = models.abstract_variables(name)
    prunable = pruning.prunable_layers(variables["params"])
    assert sorted(definition.kernels) == sorted(prunable)
    assert len(definition.kernels) == 6 * dict(definition.arch)["depth"]
    assert definition.kinds == ("attn", "mlp")
    assert definition.has_dropout and not definition.has_batch_norm
    assert definition.tokens == (name == "gpt")


def test_registry_defaults_and_shapes():
    vit_params = pruning.leaves(models.abstract_variables("vit")["params"])
    assert vit_params["block5/attn_q/kernel"].shape == (192, 192)
    assert vit_params["pos_embed"].shape == (1, 1 + 64, 192)  # 32x32 images, 4x4 patches
    gpt_params = pruning.leaves(models.abstract_variables("gpt", num_classes=50)["params"])
    assert gpt_params["pos_embed"].shape == (256, 384)
    assert gpt_params["embed/embedding"].shape == (50, 384)
    assert "head/kernel" not in gpt_params
    counts = models.weight_counts("gpt", num_classes=50)
    assert counts == {"attn": 6 * 4 * 384 * 384, "mlp": 6 * 2 * 384 * 4 * 384}
    small = models.abstract_variables("gpt", arch={"depth": 2, "tied": False, "context": 16})
    small = pruning.leaves(small["params"])
    assert "block1/attn_q/kernel" in small and "block2/attn_q/kernel" not in small
    assert small["head/kernel"].shape == (384, 10)
    assert small["pos_embed"].shape == (16, 384)


def test_gpt_is_causal():
    model = gpt()
    variables = init(model, TOKENS)
    t = 4
    changed = TOKENS.at[:, t + 1 :].set((TOKENS[:, t + 1 :] + 3) % VOCAB)
    a = model.apply(variables, TOKENS, train=False)
    b = model.apply(variables, changed, train=False)
    np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[:, t + 1 :], b[:, t + 1 :], atol=1e-4)
    # Changing the token at t changes position t itself.
    at_t = TOKENS.at[:, t].set((TOKENS[:, t] + 1) % VOCAB)
    assert not np.allclose(a[:, t], model.apply(variables, at_t, train=False)[:, t], atol=1e-4)


def zero_heads(params: dict, heads: slice) -> dict:
    """`params` with the q, k, v columns and attn_out rows of `heads` zeroed in every block."""
    head_dim = WIDTH // HEADS
    cols = slice(heads.start * head_dim, heads.stop * head_dim)
    out = flat(params)
    for name in list(out):
        layer = name.split("/")[-2] if name.endswith("kernel") else ""
        if layer in ("attn_q", "attn_k", "attn_v"):
            out[name][:, cols] = 0
        elif layer == "attn_out":
            out[name][cols, :] = 0
    return pruning.unflatten(out)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("heads", [slice(0, 1), slice(0, HEADS)], ids=["head0", "all"])
def test_pruned_heads_stay_finite(name, heads):
    model, x = case(name)
    params = with_random_head(init(model, x))["params"]
    pruned = zero_heads(params, heads)
    assert flat(pruned)["block1/attn_q/kernel"][:, 0].max() == 0
    assert not np.array_equal(
        flat(pruned)["block1/attn_q/kernel"], flat(params)["block1/attn_q/kernel"]
    )

    def loss(p):
        logits = model.apply({"params": p}, x, train=False)
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    value, grads = jax.value_and_grad(loss)(pruned)
    assert jnp.isfinite(value)
    grads = flat(grads)
    assert all(np.isfinite(g).all() for g in grads.values())
    # Gradients still reach the blocks: the MLPs, attention output and surviving heads.
    assert np.abs(grads["block0/mlp_fc1/kernel"]).max() > 0
    assert np.abs(grads["block0/attn_out/bias"]).max() > 0
    if heads.stop < HEADS:
        assert np.abs(grads["block0/attn_v/bias"][heads.stop * WIDTH // HEADS :]).max() > 0


def test_fully_masked_rows_and_zero_scores_are_uniform_and_finite():
    attn = SelfAttention(HEADS)
    x = jax.random.normal(jax.random.key(3), (2, 5, WIDTH))
    params = attn.init(jax.random.key(0), x)["params"]
    mask = jnp.zeros((5, 5), bool).at[1:].set(True)  # row 0 attends to nothing

    def loss(p):
        return jnp.sum(attn.apply({"params": p}, x, mask=mask) ** 2)

    value, grads = jax.value_and_grad(loss)(params)
    assert jnp.isfinite(value)
    assert all(jnp.isfinite(g).all() for g in jax.tree.leaves(grads))
    # With q and k zero every score is equal: each position gets the mean of the values.
    zeroed = jax.tree.map(jnp.zeros_like, {k: params[k] for k in ("attn_q", "attn_k")})
    out = attn.apply({"params": params | zeroed}, x)
    v = x @ params["attn_v"]["kernel"] + params["attn_v"]["bias"]
    expected = v.mean(axis=1, keepdims=True) @ params["attn_out"]["kernel"]
    expected = expected + params["attn_out"]["bias"]
    np.testing.assert_allclose(out, jnp.broadcast_to(expected, out.shape), rtol=1e-4, atol=1e-5)


def test_gpt_init_statistics():
    depth, width = 4, 128
    model = GPT(VOCAB, depth=depth, width=width, heads=4, context=CONTEXT, tied=False)
    params = flat(init(model, TOKENS)["params"])
    residual = 0.02 / math.sqrt(2 * depth)
    for layer in ("attn_out", "mlp_fc2"):
        w = np.concatenate([params[f"block{i}/{layer}/kernel"].ravel() for i in range(depth)])
        assert abs(w.std() - residual) < 0.1 * residual, layer
    for name in (
        "block0/attn_q/kernel",
        "block0/mlp_fc1/kernel",
        "embed/embedding",
        "pos_embed",
        "head/kernel",
    ):
        assert abs(params[name].std() - 0.02) < 0.1 * 0.02, name
    for name, value in params.items():
        if name.endswith("bias"):
            assert not value.any(), name
        if name.endswith("scale"):
            np.testing.assert_array_equal(value, 1.0)


def test_vit_init_statistics():
    model = vit(width=128, heads=4, mlp_ratio=4)
    params = flat(init(model, IMAGES)["params"])
    xavier = math.sqrt(2 / (128 + 128))  # the std of U(-a, a) with a = sqrt(6 / (in + out))
    for layer in ATTN:
        w = params[f"block0/{layer}/kernel"]
        assert abs(w.std() - xavier) < 0.1 * xavier, layer
        assert np.abs(w).max() <= math.sqrt(6 / 256) + 1e-6
        assert not params[f"block0/{layer}/bias"].any()
    fc1 = params["block0/mlp_fc1/kernel"]
    assert abs(fc1.std() - math.sqrt(2 / (128 + 512))) < 0.1 * math.sqrt(2 / 640)
    bias = params["block0/mlp_fc1/bias"]
    assert bias.any() and np.abs(bias).max() < 1e-5
    assert abs(params["pos_embed"].std() - 0.02) < 0.1 * 0.02
    assert not params["cls"].any()
    assert not params["head/kernel"].any() and not params["head/bias"].any()
    np.testing.assert_array_equal(params["ln_f/scale"], 1.0)


@pytest.mark.parametrize("name", ["vit", "gpt"])
def test_dropout(name):
    make, x = (vit, IMAGES) if name == "vit" else (gpt, TOKENS)
    plain, dropped = make(dropout=0.0), make(dropout=0.3)
    variables = with_random_head(init(plain, x))

    def run(model, train, key):
        return model.apply(variables, x, train=train, rngs={"dropout": jax.random.key(key)})

    assert not np.allclose(run(dropped, True, 1), run(dropped, True, 2))
    assert not np.allclose(run(dropped, True, 1), run(plain, False, 1))
    np.testing.assert_array_equal(run(dropped, False, 1), run(dropped, False, 2))
    np.testing.assert_allclose(run(dropped, False, 1), run(plain, False, 1), rtol=1e-6)
    np.testing.assert_array_equal(run(plain, True, 1), run(plain, True, 2))


def test_the_patch_embedding_is_the_papers_strided_convolution():
    """The dense layer over flattened patches computes the convolution of kernel and stride
    patch_size whose kernel is its matrix reshaped (rows, columns, channels)."""
    import flax.linen as nn

    vit = ViT(num_classes=3, depth=1, width=8, heads=2, patch_size=4, pool="mean")
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    params = vit.init(jax.random.PRNGKey(0), x)["params"]
    dense = params["patch_embed"]
    conv = nn.Conv(8, (4, 4), strides=(4, 4), padding="VALID")
    conv_params = {"kernel": dense["kernel"].reshape(4, 4, 3, 8), "bias": dense["bias"]}
    expected = conv.apply({"params": conv_params}, x).reshape(2, 4, 8)
    patches = x.reshape(2, 2, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 4, 48)
    got = patches @ dense["kernel"] + dense["bias"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    _, state = vit.apply(
        {"params": params}, x, capture_intermediates=True, mutable=["intermediates"]
    )
    (captured,) = state["intermediates"]["patch_embed"]["__call__"]
    np.testing.assert_allclose(captured, expected, rtol=1e-5, atol=1e-5)


def _layer_norm(x: np.ndarray, p: dict, eps: float = 1e-6) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x: np.ndarray, p: dict) -> np.ndarray:
    return x @ p["kernel"] + p["bias"]


def _vit_forward_float64(params: dict, images: np.ndarray) -> np.ndarray:
    """vit_jax's ViT (``vit_jax/models_vit.py``) written anew in float64 numpy: patches
    embedded, the class token prepended, then the position embedding added; pre-LayerNorm
    blocks with tanh-approximated GELU; the head reading the class token."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    batch, side, patch = images.shape[0], images.shape[1], 4
    n = side // patch
    x = images.reshape(batch, n, patch, n, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    x = _dense(x.reshape(batch, n * n, patch * patch * 3), p["patch_embed"])
    x = np.concatenate([np.broadcast_to(p["cls"], (batch, 1, WIDTH)), x], axis=1)
    x = x + p["pos_embed"]
    head_dim = WIDTH // HEADS
    for i in range(DEPTH):
        b = p[f"block{i}"]
        h = _layer_norm(x, b["ln1"])
        q, k, v = (
            _dense(h, b[name]).reshape(batch, -1, HEADS, head_dim)
            for name in ("attn_q", "attn_k", "attn_v")
        )
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attended = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape)
        x = x + _dense(attended, b["attn_out"])
        h = _dense(_layer_norm(x, b["ln2"]), b["mlp_fc1"])
        gelu = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        x = x + _dense(gelu, b["mlp_fc2"])
    return _dense(_layer_norm(x, p["ln_f"])[:, 0], p["head"])


def test_vit_computes_vit_jaxs_network():
    model = vit()
    params = init(model, IMAGES)["params"]
    # a nonzero head and class token, so that the logits depend on every part
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(7), a.shape), params)
    ours = model.apply({"params": params}, IMAGES)
    expected = _vit_forward_float64(params, np.asarray(IMAGES, np.float64))
    np.testing.assert_allclose(np.asarray(ours, np.float64), expected, rtol=2e-4, atol=2e-5)


def _dropout_sites(model, x) -> set[str]:
    """The names of the Dropout layers a training forward pass of `model` applies."""
    variables = init(model, x)
    called: set[str] = set()

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
            called.add(context.module.name)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
    return {name for name in called if name}


def test_dropout_sites_follow_each_models_reference():
    vit_sites = _dropout_sites(vit(dropout=0.1), IMAGES)
    # vit_jax: after the attention, after the GELU and after fc2; never the probabilities
    assert {"attn_out_drop", "mlp_hidden_drop", "mlp_drop"} <= vit_sites
    assert "attn_drop" not in vit_sites
    gpt_sites = _dropout_sites(gpt(dropout=0.1), TOKENS)
    # nanoGPT: attention probabilities, the attention's and the MLP's outputs; not the hidden units
    assert {"attn_drop", "attn_out_drop", "mlp_drop"} <= gpt_sites
    assert "mlp_hidden_drop" not in gpt_sites

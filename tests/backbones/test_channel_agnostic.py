"""OpenPhenom (channel-agnostic CA-MAE) against its publisher's inference.

The file is written as the publisher's `MAEModel.save_pretrained` writes `model.safetensors`
(maes_microscopy `huggingface_mae.py`): `torch.save({"state_dict": state})`, a torch zip under a
safetensors name, holding the encoder (`encoder.vit_backbone.`) and the decoder. The reference is
written here from the publisher's arithmetic with plain tensor operations on that state dict (no
timm block, no xferlab module): timm 0.9.7's `ParallelScalingBlock.forward` with its fused bias
`cat((zeros(3 dim), mlp_bias))` laid over `[mlp | q | k | v]`, maes_microscopy's channel-agnostic
patch embedding (`vit.py`: one projection per channel, stacked on axis 2), its position embeddings
sliced to the tokens present (`_pos_embed`), and `predict`: `pixels.float() / 255`, instance norm
(eps 1e-5), `forward_features`, the mean of the patch tokens or one mean per channel.
Weights are random with clearly non-trivial MLP bias, layer scale and norms, so that where the
bias goes changes the numbers."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tests.conftest import compose_config
from xferlab.backbones.checkpoints import UnsafeCheckpointError, pretraining_record
from xferlab.backbones.weights import WeightsError
from xferlab.runtime.building import build

DIM, HEADS, DEPTH, PATCH, GRID, MAX_CHANNELS = 128, 2, 2, 8, 4, 6
HIDDEN = 4 * DIM
SIZE = GRID * PATCH
ENC = "encoder.vit_backbone."
LN_EPS, IN_EPS = 1e-6, 1e-5  # timm ViT's LayerNorm; LazyInstanceNorm2d's default


# ---------------------------------------------------------------- the publisher's file


def sincos_pos_embed(dim: int, grid: int, channels: int) -> torch.Tensor:
    """maes_microscopy's `generate_2d_sincos_pos_embeddings(dim, grid, use_class_token=True,
    num_modality=channels)`: [sin(h w_i), cos(h w_i), sin(w w_i), cos(w w_i)] with
    w_i = 10000^(-i / (dim / 4)), row-major grid positions, the grid repeated per channel, a zero
    row for the class token in front."""
    omega = 10000.0 ** -(torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    rows = torch.arange(grid, dtype=torch.float32).repeat_interleave(grid)  # h of each position, row-major
    cols = torch.arange(grid, dtype=torch.float32).repeat(grid)
    h, w = rows[:, None] * omega, cols[:, None] * omega
    one_grid = torch.cat([h.sin(), h.cos(), w.sin(), w.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), one_grid.repeat(channels, 1)])[None]


def encoder_weights(seed: int = 0, pos: str = "sincos", avg_pool: bool = True) -> dict[str, torch.Tensor]:
    """The encoder's state dict (keys as the publisher's timm names them), random and non-trivial."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, centre=0.0):
        return centre + scale * torch.randn(*shape, generator=g)

    state = {"patch_embed.proj.weight": rand(DIM, 1, PATCH, PATCH, scale=PATCH ** -1),
             "patch_embed.proj.bias": rand(DIM, scale=0.1),
             "cls_token": rand(1, 1, DIM, scale=0.5),
             "pos_embed": (sincos_pos_embed(DIM, GRID, MAX_CHANNELS) if pos == "sincos"
                           else rand(1, 1 + MAX_CHANNELS * GRID * GRID, DIM, scale=0.5))}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state.update({
            b + "in_norm.weight": rand(DIM, scale=0.3, centre=1.0), b + "in_norm.bias": rand(DIM, scale=0.2),
            b + "in_proj.weight": rand(HIDDEN + 3 * DIM, DIM, scale=DIM ** -0.5),
            b + "mlp_bias": rand(HIDDEN, scale=1.0),
            b + "attn_out_proj.weight": rand(DIM, DIM, scale=DIM ** -0.5),
            b + "attn_out_proj.bias": rand(DIM, scale=0.1),
            b + "mlp_out_proj.weight": rand(DIM, HIDDEN, scale=HIDDEN ** -0.5),
            b + "mlp_out_proj.bias": rand(DIM, scale=0.1),
            b + "ls.gamma": rand(DIM, scale=0.3, centre=0.5),
        })
        for qk in ("q_norm", "k_norm"):
            state.update({f"{b}{qk}.weight": rand(DIM // HEADS, scale=0.3, centre=1.0),
                          f"{b}{qk}.bias": rand(DIM // HEADS, scale=0.2)})
    norm = "fc_norm" if avg_pool else "norm"  # timm 0.9.7: global_pool="avg", fc_norm=None -> fc_norm, norm Identity
    state.update({f"{norm}.weight": rand(DIM, scale=0.3, centre=1.0), f"{norm}.bias": rand(DIM, scale=0.2)})
    return state


def decoder_weights() -> dict[str, torch.Tensor]:
    return {"decoder.decoders.0.0.norm1.weight": torch.ones(64), "decoder.mask_token": torch.zeros(1, 1, 64),
            "decoder.pos_embeddings": torch.zeros(1, 1 + 6 * GRID * GRID, 64),
            "encoder_decoder_proj.weight": torch.zeros(64, DIM), "encoder_decoder_proj.bias": torch.zeros(64),
            "decoder_pred.weight": torch.zeros(PATCH * PATCH, 64), "decoder_pred.bias": torch.zeros(PATCH * PATCH)}


def released_file(path, avg_pool: bool = True, extra: dict | None = None, seed: int = 0, pos: str = "sincos",
                  safetensors: bool = False) -> dict[str, torch.Tensor]:
    """The whole autoencoder's state saved as `MAEModel.save_pretrained` saves it (or, with
    `safetensors`, as a true safetensors file); returns the encoder's state."""
    encoder = encoder_weights(seed, pos, avg_pool)
    state = {**{ENC + k: v for k, v in encoder.items()}, **decoder_weights(), **(extra or {})}
    if safetensors:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return encoder


# ---------------------------------------------------------------- the publisher's inference, by hand


def publisher_block(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """timm 0.9.7 `ParallelScalingBlock.forward` (qkv_bias=False, qk_norm, layer scale), eval mode."""
    b, n, d = x.shape
    hidden, head_dim = p["mlp_bias"].numel(), p["q_norm.weight"].numel()
    y = F.layer_norm(x, (d,), p["in_norm.weight"], p["in_norm.bias"], eps=LN_EPS)
    y = F.linear(y, p["in_proj.weight"], torch.cat((torch.zeros(3 * d), p["mlp_bias"])))
    x_mlp, q, k, v = torch.split(y, [hidden, d, d, d], dim=-1)
    q = F.layer_norm(q.reshape(b, n, -1, head_dim), (head_dim,), p["q_norm.weight"], p["q_norm.bias"], eps=LN_EPS)
    k = F.layer_norm(k.reshape(b, n, -1, head_dim), (head_dim,), p["k_norm.weight"], p["k_norm.bias"], eps=LN_EPS)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.reshape(b, n, -1, head_dim).transpose(1, 2)
    attn = ((q * head_dim ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    x_attn = F.linear((attn @ v).transpose(1, 2).reshape(b, n, d), p["attn_out_proj.weight"], p["attn_out_proj.bias"])
    x_mlp = F.linear(F.gelu(x_mlp), p["mlp_out_proj.weight"], p["mlp_out_proj.bias"])
    return x + p["ls.gamma"] * (x_attn + x_mlp)


def block_params(state: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    prefix = f"blocks.{i}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def publisher_forward_features(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`ChannelAgnosticViT.forward_features` of standardised images: the one projection per
    channel stacked on axis 2 and flattened, class token, `pos_embed[:, :tokens]`, the blocks,
    `norm` (Identity with global_pool="avg")."""
    w, bias = state["patch_embed.proj.weight"], state["patch_embed.proj.bias"]
    tokens = torch.stack([F.conv2d(x[:, i:i + 1], w, bias, stride=PATCH) for i in range(x.shape[1])], dim=2)
    tokens = tokens.flatten(2).transpose(1, 2)  # (B, D, C, h, w) -> (B, C*h*w, D)
    tokens = torch.cat([state["cls_token"].expand(len(x), -1, -1), tokens], dim=1)
    tokens = tokens + state["pos_embed"][:, :tokens.shape[1]]
    for i in range(DEPTH):
        tokens = publisher_block(block_params(state, i), tokens)
    if "norm.weight" in state:
        tokens = F.layer_norm(tokens, (DIM,), state["norm.weight"], state["norm.bias"], eps=LN_EPS)
    return tokens


def publisher_predict(state: dict[str, torch.Tensor], pixels: torch.Tensor, channelwise: bool = False) -> torch.Tensor:
    """The Hugging Face repository's `MAEModel.predict`: `input_norm` (Normalizer: float / 255;
    instance norm, eps 1e-5), `forward_features`, the patch tokens' mean (or one per channel)."""
    x = F.instance_norm(pixels.float() / 255.0, eps=IN_EPS)
    tokens = publisher_forward_features(state, x)
    n, _, d = tokens.shape
    if channelwise:
        return tokens[:, 1:].reshape(n, x.shape[1], GRID * GRID, d).mean(dim=2).reshape(n, -1)
    return tokens[:, 1:].mean(dim=1)


def config(*extra: str):
    return compose_config(["backbone=openphenom", f"backbone.preprocess.input_size={SIZE}", *extra]).backbone


def channels(n: int) -> str:
    return f"backbone.in_channels=[{','.join(f'c{i}' for i in range(n))}]"


# ---------------------------------------------------------------- parity


@pytest.mark.parametrize("pos", ["sincos", "random"])
@pytest.mark.parametrize("n", range(1, MAX_CHANNELS + 1))
def test_the_file_as_published_loads_and_embeds_as_the_publishers_predict(tmp_path, monkeypatch, n, pos):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    state = released_file(tmp_path / "OpenPhenom.safetensors", pos=pos, seed=n)
    bb = build(config(channels(n)))
    assert bb.model.max_channels == MAX_CHANNELS and bb.embed_dim == DIM
    pixels = torch.rand(3, n, SIZE, SIZE, generator=torch.Generator().manual_seed(n)) * 255
    with torch.no_grad():
        torch.testing.assert_close(bb(pixels / 255.0), publisher_predict(state, pixels), atol=1e-4, rtol=0)
        bb.features = "channelwise"
        out = bb(pixels / 255.0)
        torch.testing.assert_close(out, publisher_predict(state, pixels, channelwise=True), atol=1e-4, rtol=0)
    assert out.shape == (3, DIM * n) == (3, bb.embed_dim)


def test_global_pool_token_applies_the_final_norm_in_forward_features(tmp_path, monkeypatch):
    """timm 0.9.7 with global_pool="token" keeps `norm` (not fc_norm): forward_features applies it."""
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    state = released_file(tmp_path / "OpenPhenom.safetensors", avg_pool=False, pos="random")
    bb = build(config())
    pixels = torch.rand(2, 2, SIZE, SIZE) * 255
    with torch.no_grad():
        torch.testing.assert_close(bb(pixels / 255.0), publisher_predict(state, pixels), atol=1e-4, rtol=0)


def camera_images(n: int, dtype, seed: int = 0) -> np.ndarray:
    """Integer images (B, 2, H, W): a bright blob channel and a dim one, camera counts (uint16) or
    an 8-bit export (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    out = []
    for _ in range(n):
        blob = np.exp(-((yy - rng.uniform(0.3, 0.7)) ** 2 + (xx - rng.uniform(0.3, 0.7)) ** 2) / 0.05)
        if dtype == np.uint16:
            a, b = 400 + 8000 * blob + rng.normal(0, 60, blob.shape), 250 + 900 * blob + rng.normal(0, 30, blob.shape)
        else:
            a, b = 20 + 200 * blob + rng.normal(0, 5, blob.shape), 10 + 3 * blob + rng.normal(0, 1, blob.shape)
        top = np.iinfo(dtype).max
        out.append([np.clip(np.rint(c), 0, top).astype(dtype) for c in (a, b)])
    return np.asarray(out)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_raw_integer_images_embed_as_the_publisher_through_each_sides_own_preprocessing(tmp_path, monkeypatch, dtype):
    """`backbone=openphenom` with its shipped preprocessing (`intensity: by255`, mean 0 / std 1, no
    resize) from the store's raw pixels, against the publisher's own steps from the same array."""
    from xferlab.backbones.channels import NaturalMapping
    from xferlab.backbones.preprocess import Preprocessor

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    cfg = config()
    pre = cfg.preprocess
    assert pre.intensity == "by255" and list(pre.mean) == [0.0, 0.0] and list(pre.std) == [1.0, 1.0]
    state = released_file(tmp_path / cfg.weights, seed=7)
    bb = build(cfg)
    p = Preprocessor(pre.input_size, pre.normalize, mean=pre.mean, std=pre.std, intensity=pre.intensity,
                     scale=pre.scale, dtype_max=float(np.iinfo(dtype).max))
    adapter = NaturalMapping("natural", ["nucleus", "protein"], list(cfg.in_channels))
    raw = torch.from_numpy(camera_images(3, dtype))
    with torch.no_grad():
        ours = bb(p(raw, adapter))
        theirs = publisher_predict(state, raw)
        stretched = bb(Preprocessor(pre.input_size, pre.normalize, mean=pre.mean, std=pre.std, intensity="minmax",
                                    dtype_max=float(np.iinfo(dtype).max))(raw, adapter))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    if dtype == np.uint8:  # a dim 8-bit channel: the instance norm's eps counts, and min-max stretching changes it
        assert float((stretched - theirs).abs().max()) > 1e-3


# ---------------------------------------------------------------- why xferlab computes the blocks itself


def test_the_installed_timms_parallel_block_puts_the_mlp_bias_elsewhere_and_differs():
    """Same weights through the installed timm's ParallelScalingBlock (1.0.31 adds mlp_bias to the
    MLP branch after the split) and through timm 0.9.7's arithmetic: other numbers. xferlab's block
    is the latter."""
    from timm.models.vision_transformer import ParallelScalingBlock as TimmBlock

    from xferlab.backbones.parallel_block import ParallelScalingBlock

    params = block_params(encoder_weights(seed=3), 0)
    timm_block = TimmBlock(DIM, HEADS, qkv_bias=False, qk_norm=True, init_values=1e-4,
                           norm_layer=partial(torch.nn.LayerNorm, eps=LN_EPS)).eval()
    timm_block.load_state_dict(params, strict=True)
    ours = ParallelScalingBlock(DIM, HEADS, HIDDEN).eval()
    ours.load_state_dict(params, strict=True)
    x = torch.randn(2, 1 + 2 * GRID * GRID, DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = publisher_block(params, x)
        torch.testing.assert_close(ours(x), reference, atol=1e-5, rtol=0)
        assert float((timm_block(x) - reference).abs().max()) > 1e-3


# ---------------------------------------------------------------- formats


def test_a_true_safetensors_file_still_loads_recognised_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    state = released_file(tmp_path / "OpenPhenom.safetensors", safetensors=True, pos="random")
    bb = build(config())
    pixels = torch.rand(2, 2, SIZE, SIZE) * 255
    with torch.no_grad():
        torch.testing.assert_close(bb(pixels / 255.0), publisher_predict(state, pixels), atol=1e-4, rtol=0)
    assert bb.weights_source.endswith("(state_dict)")
    assert pretraining_record(tmp_path / "OpenPhenom.safetensors") == {}
    released_file(tmp_path / "published.safetensors")  # the torch zip: read by torch, no record inside
    assert pretraining_record(tmp_path / "published.safetensors") == {}
    assert build(config("backbone.weights=published.safetensors")).weights_source.endswith("(state_dict/state_dict)")
    released_file(tmp_path / "renamed.pth", safetensors=True)  # and safetensors under another name
    assert build(config("backbone.weights=renamed.pth")).weights_source.endswith("(state_dict)")


class Payload:
    """A pickled object outside tensors and containers."""


@pytest.mark.parametrize("damage,error,match", [
    ("truncated", WeightsError, r"not a readable safetensors file .* nor a PyTorch checkpoint, or it is truncated"),
    ("text", WeightsError,
     r"not a readable safetensors file \(it has no safetensors header\) nor a PyTorch checkpoint"),
    ("flipped", WeightsError, r"is damaged \(member .* fails its CRC check"),
    ("pickled object", UnsafeCheckpointError, r"arbitrary code.*trust_checkpoint=true"),
])
def test_a_damaged_or_foreign_file_is_a_clear_error_naming_the_file_and_the_fix(tmp_path, monkeypatch, damage,
                                                                                 error, match):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    path = tmp_path / "OpenPhenom.safetensors"
    released_file(path, extra={"payload": Payload()} if damage == "pickled object" else None)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "text":
        path.write_text("<html>Access denied</html>\n")
    elif damage == "flipped":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    with pytest.raises(error, match=match) as err:
        build(config())
    assert str(path) in str(err.value)
    assert ("trust_checkpoint" if damage == "pickled object" else "download it again") in str(err.value)


# ---------------------------------------------------------------- channels, keys, sizes


def test_channel_order_permutes_channelwise_features_and_the_slots_share_one_grid(tmp_path, monkeypatch):
    """The released position embeddings repeat one grid per channel: the mean embedding does not
    depend on the channels' order, the channelwise one follows it. (With slot-specific embeddings,
    as the random ones here, the order matters.) More channels than the model takes: an error."""
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    released_file(tmp_path / "OpenPhenom.safetensors")
    released_file(tmp_path / "slots.safetensors", pos="random")
    x = torch.rand(2, 3, SIZE, SIZE)
    bb, slots = build(config(channels(3))), build(config(channels(3), "backbone.weights=slots.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(bb(x), bb(x.flip(1)), atol=1e-5, rtol=0)
        assert not torch.allclose(slots(x), slots(x.flip(1)), atol=1e-3)
        bb.features = "channelwise"
        torch.testing.assert_close(bb(x).view(2, 3, DIM).flip(1), bb(x.flip(1)).view(2, 3, DIM), atol=1e-5, rtol=0)
    with pytest.raises(WeightsError, match="embeds at most 6 channels"):
        build(config(channels(7)))
    with pytest.raises(ValueError, match="at most 6 channels"):
        bb(torch.rand(1, 7, SIZE, SIZE))


@pytest.mark.parametrize("extra,match", [
    ({"classifier.weight": torch.zeros(2, 2)}, r"unexpected keys outside the encoder .* \['classifier.weight'\]"),
    ({ENC + "extra": torch.zeros(1)}, r"unexpected \['extra'\]"),
])
def test_keys_beyond_the_encoder_and_its_decoder_are_refused(tmp_path, monkeypatch, extra, match):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    released_file(tmp_path / "OpenPhenom.safetensors", extra=extra)
    with pytest.raises(WeightsError, match=match):
        build(config())


def test_an_input_size_other_than_the_models_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    released_file(tmp_path / "OpenPhenom.safetensors")
    with pytest.raises(WeightsError, match="not a whole number of 3 x 3 grids"):
        build(config(f"backbone.preprocess.input_size={3 * PATCH}"))
    bb = build(config())
    with pytest.raises(ValueError, match=f"takes {SIZE} px images"):
        bb(torch.rand(1, 2, 2 * SIZE, 2 * SIZE))

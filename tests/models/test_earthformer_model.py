"""Earthformer model: published configurations, global vectors, training sanity, autocast, patch merging."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from earthcast.errors import UserError
from earthcast.layers.blocks import PatchMerge, SelfAttentionBlock
from earthcast.layers.patterns import self_pattern
from earthcast.models import MODELS, build_model
from earthcast.models.earthformer import Earthformer, EarthformerConfig, build_earthformer
from tests.conftest import run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"

# (in_len, out_len, height, width, channels) of the published configurations
PUBLISHED = {"sevir": (13, 12, 384, 384, 1), "sevirlr": (7, 6, 128, 128, 1), "enso": (12, 14, 24, 48, 1)}
# parameters of the reference implementation built from its released configs
REFERENCE_PARAMS = {"sevir": 8_659_677, "sevirlr": 1_505_069, "enso": 1_394_325}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a shared 2-core machine every parallel region
    would wait for a descheduled thread; one thread keeps these tests fast and steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def load(name: str, in_len: int, out_len: int, height: int, width: int, channels: int = 1):
    """configs/model/<name>.yaml as Hydra composes it (a variant over its base) for data of this shape."""
    shape = dict(in_len=in_len, out_len=out_len, height=height, width=width, channels=channels)
    overrides = [f"model={name}", "dataset=sevir", *(f"dataset.{k}={v}" for k, v in shape.items())]
    return OmegaConf.create(run_config(overrides)["model"])


def tiny(**overrides) -> Earthformer:
    settings = dict(in_len=5, out_len=3, height=16, width=16, base_units=16, num_heads=2,
                    stem_type="stack_conv", stem_dims=[16], stem_scales=[2], stem_num_convs=[1],
                    attn_drop=0.0, proj_drop=0.0, ffn_drop=0.0)
    settings.update(overrides)
    return Earthformer(EarthformerConfig(**settings))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_of_published_configs(name):
    model = build_model(load(f"earthformer_{name}", *PUBLISHED[name]))
    count = sum(p.numel() for p in model.parameters())
    assert count == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name, shape", [("sevir", (13, 12, 48, 48)), ("sevirlr", (7, 6, 32, 32)),
                                         ("enso", (12, 14, 24, 48))])
def test_published_configs_forward_at_small_resolution(name, shape):
    in_len, out_len, height, width = shape
    model = MODELS.get("earthformer")(load(f"earthformer_{name}", *shape)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, in_len, height, width, 1))
    assert out.shape == (1, out_len, height, width, 1) and torch.isfinite(out).all()


def test_config_errors_are_user_errors():
    cfg = load("earthformer_sevirlr", 7, 6, 32, 32)
    cfg.enc_dept = [1]
    with pytest.raises(UserError, match="enc_dept"):
        build_earthformer(cfg)
    with pytest.raises(ValueError, match="built for"):
        tiny()(torch.rand(1, 4, 16, 16, 1))


@pytest.mark.parametrize("separate, self_attn, ratio", [(False, False, 1), (True, True, 1), (True, False, 2)])
def test_global_vector_shapes(separate, self_attn, ratio):
    block = SelfAttentionBlock(16, 2, self_pattern("axial", (3, 4, 5)), use_global_vectors=True,
                               global_ffn=True, use_global_self_attn=self_attn, separate_global_qkv=separate,
                               global_dim_ratio=ratio)
    x, g = block(torch.randn(2, 3, 4, 5, 16), torch.randn(2, 6, 16 * ratio))
    assert x.shape == (2, 3, 4, 5, 16) and g.shape == (2, 6, 16 * ratio)

    model = tiny(num_global_vectors=4, use_global_self_attn=self_attn, separate_global_qkv=separate,
                 global_dim_ratio=ratio, use_dec_self_global=True, use_dec_cross_global=True,
                 use_global_vector_ffn=True)
    assert model.global_vectors.shape == (4, 16 * ratio)
    x = model.pos_embed(model.stem(torch.rand(2, 5, 16, 16, 1)))
    memory, memory_globals = model.encoder(x, model.global_vectors.expand(2, -1, -1))
    assert [tuple(m.shape) for m in memory] == [(2, 5, 8, 8, 16), (2, 5, 4, 4, 32)]
    assert [tuple(g.shape) for g in memory_globals] == [(2, 4, 16 * ratio), (2, 4, 32 * ratio)]
    out = model(torch.rand(2, 5, 16, 16, 1))
    out.mean().backward()
    assert out.shape == (2, 3, 16, 16, 1)
    assert model.global_vectors.grad is not None and model.global_vectors.grad.abs().sum() > 0


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny(in_len=4, out_len=2, height=8, width=8, enc_depth=[1], dec_depth=[1], stem_scales=[1])
    inputs = torch.rand(4, 4, 8, 8, 1)
    targets = inputs[:, -2:].flip(-2)  # something to learn
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_bf16_autocast_forward_is_finite():
    # padding (T 5, H/W 8 → cuboids of 2, 3), shifts, globals and a dilated layer all under bf16
    model = tiny(self_pattern="video_swin_2x3", cross_self_pattern="spatial_lg_3", cross_pattern="cross_3x3_heter",
                 num_global_vectors=2, use_dec_cross_global=True, separate_global_qkv=True,
                 use_global_self_attn=True).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 5, 16, 16, 1))
    assert out.shape == (2, 3, 16, 16, 1) and torch.isfinite(out.float()).all()


def test_patch_merge_pads_time():
    merge = PatchMerge(4, 6, (2, 2, 2))
    x = torch.randn(1, 3, 4, 5, 4)  # T = 3 (odd), W = 5
    out = merge(x)
    assert out.shape == (1, 2, 2, 3, 6) and merge.out_shape((3, 4, 5, 4)) == (2, 2, 3, 6)
    manual = torch.nn.functional.pad(x, (0, 0, 0, 1, 0, 0, 0, 1))  # zeros at the end of T and W
    assert torch.allclose(out, merge(manual))
    # a time-merging stem on an odd number of frames runs end to end
    model = tiny(in_len=5, stem_scales=[[2, 2, 2]])
    assert model(torch.rand(1, 5, 16, 16, 1)).shape == (1, 3, 16, 16, 1)


@pytest.mark.parametrize("method", ["zeros", "last", "mean", "nearest_interp"])
def test_decoder_query_methods(method):
    model = tiny(z_init_method=method, checkpoint_level=2, gated_ffn=True, pos_embed_type="t+hw")
    out = model(torch.rand(2, 5, 16, 16, 1))
    out.mean().backward()
    assert out.shape == (2, 3, 16, 16, 1)


def test_quickstart_config_is_small():
    model = build_model(load("earthformer", 13, 12, 64, 64))
    count = sum(p.numel() for p in model.parameters())
    assert 100_000 <= count <= 500_000  # a few hundred thousand: trains in minutes on 2 CPU cores
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 13, 64, 64, 1)).shape == (1, 12, 64, 64, 1)


@pytest.mark.parametrize("leads", [1, 3])  # 3: every lead, so the published head forecasts none
def test_input_skip_copies_pixel_detail_into_its_leads_only(leads):
    """The opt-in input skip hands its first `leads` frames full-resolution detail (pixel noise, which 4×4
    tokens cannot carry) and leaves the later leads to the published head."""
    torch.manual_seed(0)
    model = tiny(in_len=4, out_len=3, stem_scales=[4], input_skip_leads=leads)  # tokens of 4×4 pixels
    assert model.input_skip is not None and tiny(in_len=4, out_len=3).input_skip is None
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(120):  # fresh noise every step, so nothing can be memorised
        inputs = torch.randn(4, 4, 16, 16, 1)
        targets = inputs[:, -1:].expand(-1, 3, -1, -1, -1)  # persistence of pixel noise
        per_lead = ((model(inputs) - targets) ** 2).mean(dim=(0, 2, 3, 4))
        optimizer.zero_grad()
        per_lead.mean().backward()
        optimizer.step()
    assert per_lead.shape == (3,)
    assert (per_lead[:leads] < 0.1).all()  # the skip's leads copy the noise (variance 1)
    assert (per_lead[leads:] > 0.5).all()  # the others cannot: their detail passes through 4×4 tokens
    with pytest.raises(ValueError, match="input_skip_leads"):
        tiny(out_len=3, input_skip_leads=4)


def test_non_zero_query_methods_add_no_position_embedding():
    """'last', 'mean' and 'nearest_interp' project the copied top memory directly (as the reference does)."""
    model = tiny(z_init_method="last").eval()
    memory = torch.randn(2, 5, 4, 4, 32)
    expected = model.query_proj(memory[:, -1:].expand(-1, 3, -1, -1, -1))
    assert torch.allclose(model.initial_query(memory), expected)


def test_decoder_self_attention_laid_out_for_input_or_output_frames():
    """The reference lays the decoder's temporal cuboids on T_in: with 5 → 3 frames a cuboid of 5 clamped
    to the decoder's 3 frames (bias table of 2·5−1 rows); 'output' sizes them by T_out (2·3−1 rows)."""
    reference = tiny(dec_self_pattern_frames="input")
    ours = tiny(dec_self_pattern_frames="output")
    assert reference.decoder.self_blocks[0][0].attn[0].relative_position_bias.shape[0] == 9
    assert ours.decoder.self_blocks[0][0].attn[0].relative_position_bias.shape[0] == 5
    # ICAR-ENSO's 12 → 14: cuboids of 12 frames on a 14-frame decoder grid, padded to 24
    enso = tiny(in_len=12, out_len=14, enc_depth=[1], dec_depth=[2], stem_scales=[4]).eval()
    attn = enso.decoder.self_blocks[0][0].attn[0]
    assert attn.geometry((14, 4, 4), torch.device("cpu")).grid == (24, 4, 4)
    assert enso(torch.rand(1, 12, 16, 16, 1)).shape == (1, 14, 16, 16, 1)
    with pytest.raises(ValueError, match="dec_self_pattern_frames"):
        tiny(dec_self_pattern_frames="both")


def test_initialisation_follows_the_reference():
    """Linear layers N(0, 1/fan_in) with zero bias; upsampling convolutions Kaiming fan-out; the stem's and
    head's convolutions and the global-vector projections keep PyTorch's default (uniform, bias non-zero)."""
    torch.manual_seed(0)
    model = tiny(base_units=64, num_global_vectors=4, stem_dims=[64], enc_depth=[1, 1], dec_depth=[1, 1])
    qkv = model.encoder.blocks[1][0].attn[0].qkv.weight
    assert abs(qkv.std().item() * qkv.shape[1] ** 0.5 - 1) < 0.05
    assert model.query_proj.bias.abs().max() == 0 and model.encoder.blocks[0][0].ffn[0].fc1.bias.abs().max() == 0
    up = model.decoder.upsample[0].conv
    fan_out = up.out_channels * 9
    assert abs(up.weight.std().item() / (2 / (1.01 * fan_out)) ** 0.5 - 1) < 0.1 and up.bias.abs().max() == 0
    stem_conv = model.stem.convs[0][0]
    bound = 1 / (stem_conv.in_channels * 9) ** 0.5  # PyTorch's default: U(±1/√fan_in)
    assert stem_conv.weight.abs().max() <= bound and stem_conv.bias.abs().max() > 0
    global_down = model.encoder.global_down[0]
    assert global_down.bias.abs().max() > 0 and global_down.weight.abs().max() <= 1 / 64**0.5
    global_proj = model.encoder.blocks[0][0].attn[0].global_proj
    assert global_proj.bias.abs().max() > 0


def test_without_final_projection_no_dropout_either():
    model = tiny(self_attn_use_final_proj=False, proj_drop=0.5)
    attn = model.encoder.blocks[0][0].attn[0]
    assert isinstance(attn.proj, torch.nn.Identity) and isinstance(attn.proj_drop, torch.nn.Identity)
    x = torch.randn(1, 5, 8, 8, 16)
    assert torch.equal(attn.train()(x), attn.eval()(x))


def test_rms_norm_is_the_reference_formula():
    """x / (‖x‖₂/√d + eps) · scale, eps outside the root (torch's RMSNorm puts it inside)."""
    from earthcast.layers.attention import norm_layer

    norm = norm_layer("rms_norm", 4)
    with torch.no_grad():
        norm.scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.tensor([[3.0, 0.0, 4.0, 0.0]])  # ‖x‖ = 5, RMS = 2.5
    expected = torch.tensor([[3.0, 0.0, 12.0, 0.0]]) / (2.5 + 1e-5)
    assert torch.allclose(norm(x), expected)


def saved_for_backward_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors a forward pass keeps for backward (a recomputed region keeps only its inputs)."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return sum(saved)


@pytest.mark.parametrize("level, stem_head", [(1, False), (2, False), (3, False), (0, True), (1, True)])
def test_activation_checkpointing_changes_memory_not_results(level, stem_head):
    """Recomputing activations in backward keeps less for backward, and gives the same output and gradients as
    storing them; the stem/head switch saves memory on top of the level it is combined with."""
    torch.manual_seed(0)
    reference = tiny()
    recomputing = tiny(checkpoint_level=level, recompute_stem_head=stem_head)
    recomputing.load_state_dict(reference.state_dict())
    x = torch.rand(2, 5, 16, 16, 1)
    assert saved_for_backward_bytes(recomputing, x) < saved_for_backward_bytes(reference, x)
    if stem_head:
        assert saved_for_backward_bytes(recomputing, x) < saved_for_backward_bytes(tiny(checkpoint_level=level), x)
    for model in (reference, recomputing):
        model(x).square().mean().backward()
    for (name, p), q in zip(reference.named_parameters(), recomputing.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name

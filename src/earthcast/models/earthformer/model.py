"""Earthformer: a hierarchical encoder–decoder space-time Transformer built from cuboid attention.

Gao, Shi, Wang, Zhu, Wang, Li, Yeung. "Earthformer: Exploring Space-Time Transformers for Earth System
Forecasting", NeurIPS 2022. Reading order, as in the paper's Fig. 2:

    inputs (B, T_in, H, W, C)
      → conv stem (downsample H, W)  → + position embedding
      → encoder: per level, cuboid self-attention blocks (+ global vectors), then patch merging
      → decoder: a learned space-time query z of T_out frames at the top level; per level from the top down,
                 cuboid self-attention and cuboid cross-attention to that level's encoder memory,
                 then nearest upsampling + conv to the level below
      → upsampling head (mirror of the stem) → linear → outputs (B, T_out, H, W, C)

The forecast is non-autoregressive: all T_out frames come out of one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from earthcast.layers.blocks import (
    CrossAttentionBlock,
    PatchMerge,
    PositionEmbedding,
    SelfAttentionBlock,
    Upsample,
    activation,
    frames,
    unframes,
)
from earthcast.layers.init import init_linear
from earthcast.layers.norm import GroupNorm
from earthcast.layers.patterns import cross_pattern, self_pattern
from earthcast.models.base import Forecaster
from earthcast.models.earthformer.stem import ConvHead, ConvStem


@dataclass
class EarthformerConfig:
    # data (interpolated from the dataset config)
    in_len: int
    out_len: int
    height: int
    width: int
    in_channels: int = 1
    out_channels: int = 1
    # widths and depths
    base_units: int = 64  # width of the first level (= the stem's output width)
    block_units: list[int] | None = None  # per-level widths; default base_units · downsample**level
    scale_alpha: float = 1.0  # width growth per level: (downsample ** scale_alpha) ** level
    num_heads: int = 4
    enc_depth: list[int] = field(default_factory=lambda: [1, 1])  # blocks per level; len = number of levels
    dec_depth: list[int] = field(default_factory=lambda: [1, 1])
    downsample: int = 2  # patch merging (1, d, d) between levels
    enc_use_inter_ffn: bool = True
    dec_use_inter_ffn: bool = True
    # attention patterns: a name for every level, or a list with one name per level
    self_pattern: str | list[str] = "axial"
    cross_self_pattern: str | list[str] = "axial"
    cross_pattern: str | list[str] = "cross_1x1"
    dec_cross_start: int = 0  # lowest level (0 = finest) with cross attention
    dec_cross_last_n_frames: int | None = None  # cross-attend only to the last n memory frames
    dec_use_first_self_attn: bool = False  # top level: self attention before the first cross attention
    # frames the decoder's self-attention cuboids are laid out for: 'input' (T_in, as the reference builds them;
    # with T_out > T_in the decoder grid is padded, e.g. ICAR-ENSO's 14 frames in cuboids of 12) or 'output'
    # (T_out: one temporal cuboid spans the whole forecast; ours, not in the published models)
    dec_self_pattern_frames: str = "input"
    dec_hierarchical_pos_embed: bool = False  # position embedding again after each decoder upsampling
    # global vectors (Sec. 3.2)
    num_global_vectors: int = 0
    use_dec_self_global: bool = False
    dec_self_update_global: bool = True
    use_dec_cross_global: bool = False
    use_global_vector_ffn: bool = False
    use_global_self_attn: bool = False
    separate_global_qkv: bool = False
    global_dim_ratio: int = 1
    # layers
    attn_drop: float = 0.1
    proj_drop: float = 0.1
    ffn_drop: float = 0.1
    ffn_activation: str = "gelu"
    gated_ffn: bool = False
    norm_layer: str = "layer_norm"
    # padding to whole cuboids: 'zeros' (attendable zero tokens, the published models), 'ignore' (zero
    # tokens masked out of attention), 'nearest' (the grid resampled to the padded size and back)
    padding_type: str = "zeros"
    pos_embed_type: str = "t+h+w"
    use_relative_pos: bool = True
    self_attn_use_final_proj: bool = True
    # decoder query: 'zeros' (a learned position embedding) | 'last' | 'mean' | 'nearest_interp' (of the top memory)
    z_init_method: str = "zeros"
    checkpoint_level: int = 0  # 0 none, 1 recompute FFNs in backward, 2 also attention, 3 also stem and head
    recompute_stem_head: bool = False  # ours: recompute the full-resolution stem and head at any level
    # convolutional stem and head
    stem_type: str = "stack_conv"  # conv: one stage at base_units, GroupNorm(16) | stack_conv: GroupNorm(d/4)
    stem_dims: list[int] | None = None  # per-stage widths; last = base_units (default [base_units])
    stem_scales: list = field(default_factory=lambda: [1])  # per stage: s → (1, s, s), [h, w] or [t, h, w]
    stem_num_convs: list[int] = field(default_factory=lambda: [2])
    head_num_convs: list[int] | None = None  # per stage, in stem order; default stem_num_convs
    stem_activation: str = "leaky"
    # not in the paper (off by default): a full-resolution skip from the input frames to the first few leads
    input_skip_leads: int = 0  # leads that get it (0 = off, the published model)
    input_skip_units: int = 16

    def __post_init__(self):
        levels = len(self.enc_depth)
        if len(self.dec_depth) != levels:
            raise ValueError("enc_depth and dec_depth need one entry per level")
        if self.block_units is None:
            self.block_units = [self.base_units * int((self.downsample**self.scale_alpha) ** i)
                                for i in range(levels)]
        if self.stem_dims is None:
            self.stem_dims = [self.base_units]
        if self.head_num_convs is None:
            self.head_num_convs = list(self.stem_num_convs)
        if self.stem_dims[-1] != self.base_units or self.block_units[0] != self.base_units:
            raise ValueError("the stem's last width and the first block width must equal base_units")
        if not 0 <= self.input_skip_leads <= self.out_len:
            raise ValueError(f"input_skip_leads must be in [0, out_len={self.out_len}], got {self.input_skip_leads}")
        if self.z_init_method not in ("zeros", "last", "mean", "nearest_interp"):
            raise ValueError(f"unknown z_init_method {self.z_init_method!r}")
        if self.dec_self_pattern_frames not in ("input", "output"):
            raise ValueError(f"dec_self_pattern_frames must be 'input' or 'output', got {self.dec_self_pattern_frames!r}")

    def per_level(self, value) -> list:
        return [value] * len(self.enc_depth) if isinstance(value, str) else list(value)


def _scale3(scale) -> tuple[int, int, int]:
    if isinstance(scale, int):
        return 1, scale, scale
    scale = tuple(int(s) for s in scale)
    return (1, *scale) if len(scale) == 2 else scale


class Encoder(nn.Module):
    """Levels of cuboid self-attention blocks joined by patch merging; returns every level's output."""

    def __init__(self, cfg: EarthformerConfig, shape: tuple[int, int, int], block_kwargs: dict):
        super().__init__()
        units, levels = cfg.block_units, len(cfg.enc_depth)
        self.shapes = [(*shape, units[0])]  # (T, H, W, C) per level: the decoder's memory shapes
        self.down = nn.ModuleList()
        for i in range(levels - 1):
            self.down.append(PatchMerge(units[i], units[i + 1], (1, cfg.downsample, cfg.downsample),
                                        padding_type=cfg.padding_type))
            self.shapes.append(self.down[-1].out_shape(self.shapes[-1]))
        patterns = cfg.per_level(cfg.self_pattern)
        globals_on = cfg.num_global_vectors > 0
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                SelfAttentionBlock(units[i], cfg.num_heads, self_pattern(patterns[i], self.shapes[i][:3]),
                                   use_inter_ffn=cfg.enc_use_inter_ffn, use_global_vectors=globals_on,
                                   **block_kwargs)
                for _ in range(cfg.enc_depth[i])
            )
            for i in range(levels)
        )
        ratio = cfg.global_dim_ratio
        self.global_down = nn.ModuleList(  # PyTorch's default initialisation, as in the reference
            nn.Linear(ratio * units[i], ratio * units[i + 1]) for i in range(levels - 1) if globals_on
        )

    def forward(self, x: torch.Tensor, global_vectors: torch.Tensor | None = None):
        memory, memory_globals = [], []
        for level, blocks in enumerate(self.blocks):
            for block in blocks:
                if global_vectors is None:
                    x = block(x)
                else:
                    x, global_vectors = block(x, global_vectors)
            memory.append(x)
            memory_globals.append(global_vectors)
            if level < len(self.down):
                x = self.down[level](x)
                if global_vectors is not None:
                    global_vectors = self.global_down[level](global_vectors)
        return memory, memory_globals


class Decoder(nn.Module):
    """From the top level down: [self-attention block → cross-attention block] × depth, then upsample.

    At the top level (unless dec_use_first_self_attn) the query first cross-attends to the memory, so that
    level has depth−1 self-attention blocks. Self-attention patterns are laid out for the memory's T_in frames
    (the reference) or, with dec_self_pattern_frames='output', for the decoder's own T_out."""

    def __init__(self, cfg: EarthformerConfig, mem_shapes: list, max_temporal_relative: int, block_kwargs: dict):
        super().__init__()
        levels, out_len, top = len(mem_shapes), cfg.out_len, len(mem_shapes) - 1
        self.depth, self.cross_start, self.first_self = cfg.dec_depth, cfg.dec_cross_start, cfg.dec_use_first_self_attn
        self.self_global = cfg.num_global_vectors > 0 and cfg.use_dec_self_global
        self.update_global = cfg.dec_self_update_global
        cross_global = cfg.num_global_vectors > 0 and cfg.use_dec_cross_global
        self_patterns, cross_patterns = cfg.per_level(cfg.cross_self_pattern), cfg.per_level(cfg.cross_pattern)
        self.self_blocks, self.cross_blocks = nn.ModuleList(), nn.ModuleList()
        for i, (_, h, w, dim) in enumerate(mem_shapes):
            num_self = cfg.dec_depth[i] - (1 if i == top and not self.first_self else 0)
            frames = out_len if cfg.dec_self_pattern_frames == "output" else mem_shapes[i][0]
            layers = self_pattern(self_patterns[i], (frames, h, w))
            self.self_blocks.append(nn.ModuleList(
                SelfAttentionBlock(dim, cfg.num_heads, layers, use_inter_ffn=cfg.dec_use_inter_ffn,
                                   use_global_vectors=self.self_global, **block_kwargs)
                for _ in range(num_self)
            ))
            cross_layers = cross_pattern(cross_patterns[i], mem_shapes[i][:3])
            cross_kwargs = {k: v for k, v in block_kwargs.items()
                            if k not in ("global_ffn", "use_global_self_attn", "use_final_proj")}
            self.cross_blocks.append(nn.ModuleList(
                CrossAttentionBlock(dim, cfg.num_heads, cross_layers, max_temporal_relative,
                                    use_inter_ffn=cfg.dec_use_inter_ffn, use_global_vectors=cross_global,
                                    last_n_frames=cfg.dec_cross_last_n_frames, **cross_kwargs)
                for _ in range(cfg.dec_depth[i] if i >= cfg.dec_cross_start else 0)
            ))
        self.upsample = nn.ModuleList(
            Upsample(mem_shapes[i + 1][3], mem_shapes[i][3], mem_shapes[i][1:3]) for i in range(levels - 1)
        )
        self.pos_embed = nn.ModuleList(
            PositionEmbedding(mem_shapes[i][3], out_len, *mem_shapes[i][1:3], cfg.pos_embed_type)
            for i in range(levels - 1) if cfg.dec_hierarchical_pos_embed
        )

    def forward(self, x: torch.Tensor, memory: list, memory_globals: list) -> torch.Tensor:
        top = len(memory) - 1
        for level in range(top, -1, -1):
            mem, g = memory[level], memory_globals[level]
            self_blocks, cross_blocks = self.self_blocks[level], self.cross_blocks[level]
            cross_first = level == top and not self.first_self
            if cross_first and len(cross_blocks):
                x = cross_blocks[0](x, mem, g)
            for i, block in enumerate(self_blocks):
                if self.self_global:
                    x, new_g = block(x, g)
                    g = new_g if self.update_global else g
                else:
                    x = block(x)
                j = i + 1 if cross_first else i
                if j < len(cross_blocks):
                    x = cross_blocks[j](x, mem, g)
            if level > 0:
                x = self.upsample[level - 1](x)
                if len(self.pos_embed):
                    x = self.pos_embed[level - 1](x)
        return x


class InputSkip(nn.Module):
    """Forecast of the first `input_skip_leads` frames from the head's features plus a 3×3 convolution of all
    input frames stacked as channels, at full resolution (not part of the published model).

    A small Earthformer's forecast has the resolution of its tokens, which costs it the first 5–10 minutes
    against persistence and the UNet; this path hands those leads the pixels themselves. Later leads keep the
    published head alone: given the path at every lead, the model leant on it there too and lost its
    long-lead skill (docs/skill_runs.md, fifth and seventh rounds)."""

    def __init__(self, cfg: EarthformerConfig):
        super().__init__()
        width, units = cfg.stem_dims[0], cfg.input_skip_units
        self.inputs_conv = nn.Conv2d(cfg.in_len * cfg.in_channels, width, 3, padding=1)
        self.mix = nn.Sequential(
            GroupNorm(max(1, width // 4), width), activation(cfg.stem_activation),
            nn.Conv2d(width, units, 1), GroupNorm(max(1, units // 4), units), activation(cfg.stem_activation),
        )
        self.out = nn.Linear(units, cfg.out_channels)

    def forward(self, inputs: torch.Tensor, head_features: torch.Tensor) -> torch.Tensor:
        """inputs (B, T_in, H, W, C), head_features (B, k, H, W, width) → (B, k, H, W, C_out)."""
        stacked = rearrange(inputs, "b t h w c -> b (t c) h w")
        skip = rearrange(self.inputs_conv(stacked), "b c h w -> b 1 h w c")
        mixed = self.mix(frames(head_features + skip))
        return self.out(unframes(mixed, inputs.shape[0]))


class Earthformer(Forecaster):
    def __init__(self, cfg: EarthformerConfig):
        super().__init__(cfg.in_len, cfg.out_len)
        self.cfg = cfg
        # convolutional stem and its mirror head
        stage_scales = [_scale3(s) for s in cfg.stem_scales]
        if cfg.stem_type not in ("conv", "stack_conv"):
            raise ValueError(f"stem_type must be 'conv' or 'stack_conv', got {cfg.stem_type!r}")
        groups = [math.gcd(16, d) if cfg.stem_type == "conv" else max(1, d // 4) for d in cfg.stem_dims]
        recompute_stem_head = cfg.recompute_stem_head or cfg.checkpoint_level >= 3
        self.stem = ConvStem(cfg.in_channels, cfg.stem_dims, stage_scales, cfg.stem_num_convs, groups,
                             cfg.stem_activation, cfg.padding_type, recompute=recompute_stem_head)
        stem_shapes = self.stem.out_shapes((cfg.in_len, cfg.height, cfg.width, cfg.in_channels))
        sizes = [(cfg.height, cfg.width)] + [s[1:3] for s in stem_shapes[:-1]]
        self.head = ConvHead(cfg.stem_dims, sizes, cfg.head_num_convs, groups, cfg.stem_activation,
                             recompute=recompute_stem_head)
        self.out_proj = nn.Linear(cfg.stem_dims[0], cfg.out_channels)
        self.input_skip = InputSkip(cfg) if cfg.input_skip_leads else None

        # encoder
        t, h, w, _ = stem_shapes[-1]
        self.pos_embed = PositionEmbedding(cfg.base_units, t, h, w, cfg.pos_embed_type)
        block_kwargs = dict(
            attn_drop=cfg.attn_drop, proj_drop=cfg.proj_drop, ffn_drop=cfg.ffn_drop,
            ffn_activation=cfg.ffn_activation, gated_ffn=cfg.gated_ffn, norm=cfg.norm_layer,
            padding_type=cfg.padding_type, use_relative_pos=cfg.use_relative_pos,
            use_final_proj=cfg.self_attn_use_final_proj, global_ffn=cfg.use_global_vector_ffn,
            use_global_self_attn=cfg.use_global_self_attn, separate_global_qkv=cfg.separate_global_qkv,
            global_dim_ratio=cfg.global_dim_ratio, checkpoint_level=cfg.checkpoint_level,
        )
        self.encoder = Encoder(cfg, (t, h, w), block_kwargs)
        self.global_vectors = (
            nn.Parameter(torch.zeros(cfg.num_global_vectors, cfg.global_dim_ratio * cfg.base_units))
            if cfg.num_global_vectors > 0 else None
        )

        # decoder: a learned space-time query at the top level, refined level by level
        mem_shapes = self.encoder.shapes
        _, top_h, top_w, top_dim = mem_shapes[-1]
        self.query_pos_embed = PositionEmbedding(top_dim, cfg.out_len, top_h, top_w, cfg.pos_embed_type)
        self.query_proj = nn.Linear(top_dim, top_dim)
        self.decoder = Decoder(cfg, mem_shapes, t + cfg.out_len, block_kwargs)
        self.reset_parameters()

    def reset_parameters(self):
        """The reference's initialisation at model level (each layer initialises its own parameters, see
        earthcast.layers.init): the query and output projections N(0, 1/fan_in), global vectors truncated
        N(0, 0.02²); the stem's and head's convolutions keep PyTorch's default, as in the reference."""
        init_linear(self.query_proj)
        init_linear(self.out_proj)
        if self.input_skip is not None:
            init_linear(self.input_skip.out)
        if self.global_vectors is not None:
            nn.init.trunc_normal_(self.global_vectors, std=0.02)

    def initial_query(self, top_memory: torch.Tensor) -> torch.Tensor:
        """The decoder's input: T_out frames at the top level, projected. 'zeros' is a purely learned
        space-time query (the position embedding), shared by all samples; the other methods copy the top memory
        and, as in the reference, add no position embedding."""
        batch, _, h, w, c = top_memory.shape
        method, out_len = self.cfg.z_init_method, self.cfg.out_len
        if method == "zeros":
            return self.query_proj(self.query_pos_embed.embedding(out_len, h, w)).expand(batch, -1, -1, -1, -1)
        if method == "last":
            z = top_memory[:, -1:].expand(-1, out_len, -1, -1, -1)
        elif method == "mean":
            z = top_memory.mean(dim=1, keepdim=True).expand(-1, out_len, -1, -1, -1)
        else:  # nearest_interp along time
            z = F.interpolate(top_memory.permute(0, 4, 1, 2, 3), size=(out_len, h, w)).permute(0, 2, 3, 4, 1)
        return self.query_proj(z)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        expected = (cfg.in_len, cfg.height, cfg.width, cfg.in_channels)
        if tuple(inputs.shape[1:]) != expected:
            raise ValueError(f"earthformer built for inputs (B, {expected}), got {tuple(inputs.shape)}")
        x = self.pos_embed(self.stem(inputs))
        g = None if self.global_vectors is None else self.global_vectors.expand(inputs.shape[0], -1, -1)
        memory, memory_globals = self.encoder(x, g)
        y = self.head(self.decoder(self.initial_query(memory[-1]), memory, memory_globals))
        if self.input_skip is None:
            return self.out_proj(y)
        k = cfg.input_skip_leads
        short = self.input_skip(inputs, y[:, :k])
        return torch.cat([short, self.out_proj(y[:, k:])], dim=1) if k < cfg.out_len else short


def config_from(cfg_model) -> EarthformerConfig:
    """EarthformerConfig from a DictConfig/dict (the `name` key is ignored); unknown keys are errors."""
    from omegaconf import DictConfig, OmegaConf

    from earthcast.errors import UserError

    values = OmegaConf.to_container(cfg_model, resolve=True) if isinstance(cfg_model, DictConfig) else dict(cfg_model)
    values.pop("name", None)
    known = {f.name for f in fields(EarthformerConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"model.{unknown[0]}: unknown earthformer setting; known: {', '.join(sorted(known))}")
    try:
        return EarthformerConfig(**values)
    except (TypeError, ValueError) as err:
        raise UserError(f"earthformer config: {err}") from err


def build_earthformer(cfg_model) -> Earthformer:
    return Earthformer(config_from(cfg_model))

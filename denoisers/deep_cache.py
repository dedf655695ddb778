"""DeepCache (Ma et al., CVPR'24): reuse the U-Net's deep features across adjacent denoising steps.

Adjacent steps have nearly equal high-level U-Net features. Every ``cache_interval`` steps the
full ``UNet2DConditionModel`` runs and the input that its shallowest up block (``up_blocks[-1]``)
receives from the deeper path is stored; on the steps in between only the shallow path runs,
fed that stored feature::

    full step  (k % interval == 0):  the plain ``unet(x, t, context)`` call; a forward pre-hook
                                     on up_blocks[-1] keeps its ``hidden_states`` (B, C1, h, w)
                                     (installed once per U-Net, a no-op for any other call)
    cached step (the others):        conv_in -> time embedding -> down_blocks[0] (its skips)
                                     -> up_blocks[-1](stored deep feature, skips)
                                     -> conv_norm_out / conv_act / conv_out

``cache_interval=1`` never takes the cached path and the full step *is* the plain U-Net call, so
the output equals the U-Net's bit for bit. The cached path repeats ``UNet2DConditionModel.forward``
line for line for the parts it runs (same diffusers helpers, same block calls), so fed the deep
feature of the *same* step it also reproduces the full output exactly (tested).

Deviation from the paper's code (horseee/DeepCache), as TECHNIQUES.md specifies: the skip branch
is the whole first down block and the whole last up block (the paper can cut inside a block,
``cache_block_id``). ``down_blocks[0]`` runs as one module, so its downsampler runs too although
only the deeper path uses its output (one stride-2 conv, a few percent of the cached step).
ControlNet / T2I-adapter residuals, GLIGEN and class labels are not passed by the engine and are
not supported here.
"""

from __future__ import annotations

import threading

import torch
from diffusers import UNet2DConditionModel


def cache_schedule(steps: int, interval: int) -> list[bool]:
    """Which of ``steps`` steps run the full U-Net (True): step k is full iff k % interval == 0."""
    return [k % interval == 0 for k in range(steps)]


def unsupported_reason(unet: torch.nn.Module) -> str | None:
    """Why DeepCache cannot run on ``unet`` (None if it can)."""
    if not isinstance(unet, UNet2DConditionModel):
        return f"feature caching needs a diffusers UNet2DConditionModel, got {type(unet).__name__}"
    if len(unet.down_blocks) < 2 or len(unet.up_blocks) < 2:
        return "feature caching needs a U-Net with at least two down and two up blocks"
    skips = (
        1 + len(unet.down_blocks[0].resnets) + len(getattr(unet.down_blocks[0], "downsamplers", None) or ())
    )
    if skips < len(unet.up_blocks[-1].resnets):
        return "the first down block does not provide the skips the last up block takes"
    return None


class DeepCacheUNet:
    """A noise-prediction callable over ``unet`` with DeepCache: ``cached(x, t, context) -> eps``.

    One instance serves one sampling loop: call k (from 0) is a full U-Net step when
    ``k % interval == 0`` and a cached (shallow) step otherwise, reusing the deep feature of the
    last full step. The batch (rows of ``x`` and ``context``) must stay the same for the whole loop.

    Attributes:
        interval: the cache interval (1 = no caching: every call is the plain U-Net).
        full_steps / cached_steps: how many calls took each path so far.
    """

    def __init__(self, unet: UNet2DConditionModel, interval: int):
        if interval < 1:
            raise ValueError(f"cache interval must be >= 1, got {interval}")
        if interval > 1 and (reason := unsupported_reason(unet)) is not None:
            raise ValueError(reason)
        self.unet = unet
        self.interval = interval
        self.full_steps = 0
        self.cached_steps = 0
        self._deep: torch.Tensor | None = None  # (B, C_deep, h, w): up_blocks[-1]'s input, last full step

    def __call__(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        """Predicted noise (B, C, h, w) for ``sample`` (B, C, h, w) at ``timestep``."""
        step = self.full_steps + self.cached_steps
        if step % self.interval == 0:
            self.full_steps += 1
            if self.interval == 1:  # no caching: the plain call, nothing kept
                return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample
            out, self._deep = full_forward(self.unet, sample, timestep, encoder_hidden_states)
            return out
        self.cached_steps += 1
        return shallow_forward(self.unet, sample, timestep, encoder_hidden_states, self._deep)


_capture = threading.local()  # .kept: list the current thread's full step appends the deep feature to
_hook_lock = threading.Lock()


def _keep_deep_feature(module, args, kwargs) -> None:
    """Forward pre-hook on up_blocks[-1]: a no-op unless this thread's ``full_forward`` is running."""
    kept = getattr(_capture, "kept", None)
    if kept is not None:
        kept.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])


def _install_hook(unet: UNet2DConditionModel) -> None:
    """Register the pre-hook once per U-Net (never removed, so concurrent calls never see hooks change)."""
    block = unet.up_blocks[-1]
    with _hook_lock:
        if not getattr(block, "_triptych_deep_cache_hook", False):
            block.register_forward_pre_hook(_keep_deep_feature, with_kwargs=True)
            block._triptych_deep_cache_hook = True


def full_forward(
    unet: UNet2DConditionModel,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain U-Net output (B, C, h, w) and the deep feature up_blocks[-1] received (B, C_deep, h, w)."""
    _install_hook(unet)
    _capture.kept = kept = []
    try:
        out = unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample
    finally:
        _capture.kept = None
    return out, kept[-1]


def shallow_forward(
    unet: UNet2DConditionModel,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    deep: torch.Tensor,
) -> torch.Tensor:
    """The U-Net's output with the deeper path replaced by ``deep`` (what up_blocks[-1] receives).

    Mirrors ``UNet2DConditionModel.forward`` (diffusers 0.42) for the parts it runs, without
    ControlNet / adapter residuals, GLIGEN, class labels or attention masks (never passed here).
    """
    if deep is None or deep.shape[0] != sample.shape[0]:
        raise RuntimeError("DeepCache: a cached step needs the deep feature of a full step on the same batch")
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    # time embedding, as in forward: (B, D_t)
    t_emb = unet.get_time_embed(sample=sample, timestep=timestep)
    emb = unet.time_embedding(t_emb, None)
    class_emb = unet.get_class_embed(sample=sample, class_labels=None)
    if class_emb is not None:
        emb = torch.cat([emb, class_emb], dim=-1) if unet.config.class_embeddings_concat else emb + class_emb
    aug_emb = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs={})
    if unet.config.addition_embed_type == "image_hint":
        raise ValueError("DeepCache: addition_embed_type 'image_hint' is not supported")
    emb = emb + aug_emb if aug_emb is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    encoder_hidden_states = unet.process_encoder_hidden_states(
        encoder_hidden_states=encoder_hidden_states, added_cond_kwargs={}
    )

    # shallow down path: conv_in and the first down block give the last up block's skips
    hidden = unet.conv_in(sample)  # (B, C0, h, w)
    skips: tuple[torch.Tensor, ...] = (hidden,)
    first = unet.down_blocks[0]
    if getattr(first, "has_cross_attention", False):
        _, res = first(
            hidden_states=hidden,
            temb=emb,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=None,
            cross_attention_kwargs=None,
            encoder_attention_mask=None,
        )
    else:
        _, res = first(hidden_states=hidden, temb=emb)
    skips += res  # conv_in, each layer of down_blocks[0], its downsample (used only by the deep path)
    last = unet.up_blocks[-1]
    skips = skips[: len(last.resnets)]  # in forward, the last up block takes the first len(resnets) skips

    # the last up block, fed the stored deep feature instead of up_blocks[-2]'s output
    if getattr(last, "has_cross_attention", False):
        hidden = last(
            hidden_states=deep,
            temb=emb,
            res_hidden_states_tuple=skips,
            encoder_hidden_states=encoder_hidden_states,
            cross_attention_kwargs=None,
            upsample_size=None,
            attention_mask=None,
            encoder_attention_mask=None,
        )
    else:
        hidden = last(hidden_states=deep, temb=emb, res_hidden_states_tuple=skips, upsample_size=None)
    if unet.conv_norm_out:
        hidden = unet.conv_norm_out(hidden)
        hidden = unet.conv_act(hidden)
    return unet.conv_out(hidden)  # (B, C, h, w)

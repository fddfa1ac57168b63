"""Phi-3.5-vision (and Phi-3-vision) on current transformers, built from its own Phi-3 and CLIP components.

The module tree, and so the state dict, keeps the official checkpoint's names (`model.vision_embed_tokens.
img_processor.vision_model...`, `glb_GN`, `sub_GN`, `img_projection.0/.2`, `qkv_proj`, ...), so its weights load
without conversion. Image positions in `input_ids` hold `config.image_token_id`; their embeddings are replaced by
the image features in order (first image of the first prompt first).

Image features (per image, `h x w` grid of 336 px crops plus one global 336 px view):
CLIP hidden state `img_processor.layer_idx` (-2) without CLS -> 24x24 patches -> 2x2 merge into 12x12 x (4*dim)
-> sub-crops assembled into a (12h) x (12w) grid with `sub_GN` after each row, then `glb_GN`, then the global view's
12 x 12 grid with `sub_GN` after each row -> 2-layer MLP. That is (h*w+1)*144 + 1 + (h+1)*12 tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.models.phi3.modeling_phi3 import (
    Phi3Attention,
    Phi3DecoderLayer,
    Phi3RMSNorm,
    Phi3RotaryEmbedding,
)
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from inspector.models.cache_keyword import CACHE_KEYWORD, one_cache
from inspector.models.phi3v.configuration_phi3_v import STOP_TOKEN_IDS, Phi3VConfig


class Phi3VCLIPVisionModel(CLIPVisionModel):
    """transformers' CLIP vision transformer, unchanged.

    Its own class so that transformers does not apply its checkpoint renaming for `CLIPVisionModel` (which strips
    and, on save, re-adds a `vision_model.` prefix): our names already equal the Phi-3-vision checkpoint's. Its
    layers are run directly (never its forward), and must not add their states to the language model's
    `output_hidden_states`, hence no recorded outputs.
    """

    _can_record_outputs = {}


class Phi3VVisionTower(nn.Module):
    """The CLIP encoder, run only up to the hidden state that Phi-3-vision uses (layer -2: the last layer is skipped)."""

    def __init__(self, config: Phi3VConfig):
        super().__init__()
        self.vision_model = Phi3VCLIPVisionModel(config.vision_config)
        layer_idx = config.vision_feature_layer
        num_layers = config.vision_config.num_hidden_layers
        # hidden_states[0] is the embedding output, hidden_states[i] the output of layer i.
        self.num_layers_run = layer_idx + num_layers + 1 if layer_idx < 0 else layer_idx

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(crops, 3, 336, 336) -> (crops, 576, dim): patch features without the CLS position."""
        vision = self.vision_model
        hidden = vision.embeddings(pixel_values.to(vision.embeddings.patch_embedding.weight.dtype))
        hidden = vision.pre_layrnorm(hidden)
        for layer in vision.encoder.layers[: self.num_layers_run]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]


class Phi3VImageEmbedding(nn.Module):
    """Pixel crops -> projected image features in `input_ids` order (HD transform, `sub_glb` order)."""

    def __init__(self, config: Phi3VConfig):
        super().__init__()
        dim = config.vision_config.hidden_size
        self.img_processor = Phi3VVisionTower(config)
        self.image_dim_out = dim
        self.crop_size = config.crop_size
        self.side = config.tokens_per_crop_side
        # Learnable separators: `sub_GN` ends every row of features, `glb_GN` sits between sub-crops and global view.
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, 4 * dim))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, 4 * dim))
        self.img_projection = nn.Sequential(
            nn.Linear(4 * dim, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )

    def crop_grids(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> list[tuple[int, int]]:
        """(rows, columns) of 336 px crops per image, after checking the inputs fit together."""
        if pixel_values.ndim != 5 or tuple(pixel_values.shape[2:]) != (3, self.crop_size, self.crop_size):
            raise ValueError(
                f"pixel_values must have shape (images, crops, 3, {self.crop_size}, {self.crop_size}), got "
                f"{tuple(pixel_values.shape)}; build inputs with Phi3VProcessor."
            )
        if image_sizes is None:
            raise ValueError(
                "image_sizes is required with pixel_values: the padded (height, width) of each image."
            )
        sizes = torch.as_tensor(image_sizes).reshape(-1, 2).tolist()
        if len(sizes) != pixel_values.shape[0]:
            raise ValueError(f"{pixel_values.shape[0]} images in pixel_values but {len(sizes)} image_sizes.")
        grids = []
        for height, width in sizes:
            rows, cols = int(height) // self.crop_size, int(width) // self.crop_size
            if rows < 1 or cols < 1 or height % self.crop_size or width % self.crop_size:
                raise ValueError(
                    f"image size {height}x{width} is not a positive multiple of the {self.crop_size} px crop size."
                )
            if 1 + rows * cols > pixel_values.shape[1]:
                raise ValueError(
                    f"an image of {rows}x{cols} crops needs {1 + rows * cols} crops in pixel_values, which has only "
                    f"{pixel_values.shape[1]} per image."
                )
            grids.append((rows, cols))
        return grids

    def merge_2x2(self, features: torch.Tensor) -> torch.Tensor:
        """(crops, 24*24, dim) -> (crops, 12, 12, 4*dim): each 2x2 block of patches becomes one feature."""
        crops, _, dim = features.shape
        side = self.side
        return (
            features.reshape(crops, side, 2, side, 2, dim)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(crops, side, side, 4 * dim)
        )

    def add_row_separators(self, grid: torch.Tensor) -> torch.Tensor:
        """(rows, cols, 4*dim) -> (rows*(cols+1), 4*dim) with `sub_GN` after each row."""
        rows = grid.shape[0]
        separators = self.sub_GN[0].expand(rows, 1, -1).to(grid.dtype)
        return torch.cat([grid, separators], dim=1).reshape(-1, grid.shape[-1])

    def hd_features(self, patch_features: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
        """CLIP patch features of the real crops (each image: global view, then sub-crops row by row) ->
        (image tokens, 4*dim) in `sub_glb` order with separators, ready for the projection."""
        merged = self.merge_2x2(patch_features)
        side, channels = self.side, merged.shape[-1]
        pieces = []
        start = 0
        for rows, cols in grids:
            global_view, sub_crops = merged[start], merged[start + 1 : start + 1 + rows * cols]
            start += 1 + rows * cols
            sub_grid = (
                sub_crops.reshape(rows, cols, side, side, channels)
                .permute(0, 2, 1, 3, 4)
                .reshape(rows * side, cols * side, channels)
            )
            pieces += [
                self.add_row_separators(sub_grid),
                self.glb_GN[0].to(merged.dtype),
                self.add_row_separators(global_view),
            ]
        return torch.cat(pieces)

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """(images, crops, 3, 336, 336) + padded (height, width) per image -> (image tokens, hidden_size)."""
        grids = self.crop_grids(pixel_values, image_sizes)
        # Only real crops go through CLIP (not the zero padding up to num_crops + 1), all images at once.
        real_crops = torch.cat([pixel_values[i, : 1 + rows * cols] for i, (rows, cols) in enumerate(grids)])
        features = self.hd_features(self.img_processor(real_crops), grids)
        return self.img_projection(features.to(self.img_projection[0].weight.dtype))


class Phi3VPreTrainedModel(PreTrainedModel):
    config: Phi3VConfig
    config_class = Phi3VConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["Phi3DecoderLayer", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]
    _skip_keys_device_placement = [CACHE_KEYWORD]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": Phi3DecoderLayer, "attentions": Phi3Attention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Phi3VImageEmbedding):
            init.zeros_(module.glb_GN)
            init.zeros_(module.sub_GN)


class Phi3VModel(Phi3VPreTrainedModel):
    """Phi-3 decoder whose input embeddings carry image features at the `<|image|>` positions."""

    def __init__(self, config: Phi3VConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        self.vision_embed_tokens = Phi3VImageEmbedding(config)
        self.layers = nn.ModuleList(
            [Phi3DecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = Phi3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Phi3RotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def get_image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """Projected features of every image, concatenated in order: (image tokens, hidden_size)."""
        return self.vision_embed_tokens(pixel_values, image_sizes)

    def get_placeholder_mask(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Boolean (batch, seq, 1) mask of image positions, after checking it matches the number of features."""
        if input_ids is None:
            image_embedding = self.embed_tokens(
                torch.tensor(self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == image_embedding).all(-1)
        else:
            mask = input_ids == self.config.image_token_id
        n_tokens, n_features = int(mask.sum()), image_features.shape[0]
        if n_tokens != n_features:
            raise ValueError(
                f"input_ids hold {n_tokens} image tokens (id {self.config.image_token_id}) but the images give "
                f"{n_features} features; build inputs with Phi3VProcessor, which puts (h*w+1)*144+1+(h+1)*12 "
                "image tokens per image of h x w crops, and pass every image of the batch."
            )
        return mask.unsqueeze(-1)

    def _has_unfilled_image_tokens(self, input_ids: torch.Tensor | None, cache: Cache | None) -> bool:
        """Image tokens in a prompt (first forward) that comes without images: a caller bug, not a decode step."""
        if input_ids is None or (cache is not None and cache.get_seq_length() > 0):
            return False
        return bool((input_ids == self.config.image_token_id).any())

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """The KV cache comes as `cache` (transformers >= 5.24) or `past_key_values` (earlier releases); it is
        handed on under the name the installed release's layers, mask builder and outputs use."""
        cache = one_cache(past_key_values, cache)
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        if pixel_values is not None:
            image_features = self.get_image_features(pixel_values, image_sizes)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            inputs_embeds = inputs_embeds.masked_scatter(
                mask.to(inputs_embeds.device), image_features.to(inputs_embeds.device, inputs_embeds.dtype)
            )
        elif self._has_unfilled_image_tokens(input_ids, cache):
            raise ValueError(
                f"input_ids hold image tokens (id {self.config.image_token_id}) but no pixel_values were given; "
                "pass the processor's pixel_values and image_sizes with them."
            )
        inputs_embeds = self.embed_dropout(inputs_embeds)

        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen
            position_ids = position_ids.unsqueeze(0)

        mask_function = (
            create_causal_mask if self.config.sliding_window is None else create_sliding_window_causal_mask
        )
        causal_mask = mask_function(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{CACHE_KEYWORD: cache},
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **{CACHE_KEYWORD: cache},
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, **{CACHE_KEYWORD: cache if use_cache else None}
        )


def _labelled_positions_loss(
    lm_head: nn.Linear, hidden_states: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None, **_: Any
) -> torch.Tensor:
    """Causal-LM cross-entropy computed from the hidden states of labelled positions only (labels shifted by one,
    -100 ignored, mean over labelled tokens or sum / `num_items_in_batch` as transformers' loss does)."""
    targets = labels[:, 1:].to(hidden_states.device)
    labelled = targets != -100
    logits = lm_head(hidden_states[:, :-1][labelled]).float()
    loss = nn.functional.cross_entropy(logits, targets[labelled], reduction="sum")
    if num_items_in_batch is None:
        return loss / labelled.sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


class Phi3VForConditionalGeneration(Phi3VPreTrainedModel, GenerationMixin):
    """Phi-3-vision with its language-modelling head: training loss, `generate()` with KV cache and images."""

    #: In training mode with labels, compute logits at labelled positions only and return no logits (benchmarks
    #: switch it off on an instance to measure the full-logits path).
    loss_on_labelled_positions_only = True
    #: The output head shares the token embedding when the config says `tie_word_embeddings` (the demo model does,
    #: to halve its size; the official checkpoint does not).
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: Phi3VConfig):
        super().__init__(config)
        self.model = Phi3VModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        self.use_turn_end_as_eos()

    def use_turn_end_as_eos(self) -> None:
        """Stop at `<|end|>` and `<|endoftext|>` unless the generation config names other stop tokens.

        The checkpoint's generation config says `</s>` (2), which the model does not emit at the end of a turn.
        """
        generation_config = self.generation_config
        if generation_config is None:
            return
        eos = generation_config.eos_token_id
        eos_ids = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        if eos_ids <= {2, *STOP_TOKEN_IDS} and max(STOP_TOKEN_IDS) < self.config.vocab_size:
            generation_config.eos_token_id = list(STOP_TOKEN_IDS)
            if generation_config.pad_token_id is None:
                generation_config.pad_token_id = self.config.pad_token_id

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Phi3VForConditionalGeneration:
        model = super().from_pretrained(*args, **kwargs)
        # The checkpoint's generation_config.json (eos 2) is read after __init__: fix it again.
        if isinstance(model, Phi3VForConditionalGeneration):
            model.use_turn_end_as_eos()
        elif isinstance(model, tuple) and isinstance(model[0], Phi3VForConditionalGeneration):
            model[0].use_turn_end_as_eos()
        return model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def get_decoder(self) -> Phi3VModel:
        return self.model

    def get_image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values, image_sizes)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """`labels` = -100 where no loss is wanted (prompt, image and padding positions); shifted internally.
        The KV cache comes as `cache` or `past_key_values`, whichever the installed transformers uses."""
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=one_cache(past_key_values, cache),
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if labels is not None and self.training and self.loss_on_labelled_positions_only:
            # Training: logits only where a label is (the answer tokens, ~7 % of a Phi-3.5-vision sample), never
            # the full (batch, length, 32064) fp32 tensor; the same loss as `loss_function` on the full logits.
            return CausalLMOutputWithPast(
                loss=_labelled_positions_loss(self.lm_head, hidden_states, labels, **kwargs),
                past_key_values=outputs.past_key_values,
            )
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, kept, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_KEYWORD: getattr(outputs, CACHE_KEYWORD)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


#: The name in the official checkpoint's `architectures`.
Phi3VForCausalLM = Phi3VForConditionalGeneration

__all__ = [
    "Phi3VCLIPVisionModel",
    "Phi3VForCausalLM",
    "Phi3VForConditionalGeneration",
    "Phi3VImageEmbedding",
    "Phi3VModel",
    "Phi3VPreTrainedModel",
    "Phi3VVisionTower",
]

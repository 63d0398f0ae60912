"""Parameter-efficient wrappers around a frozen open_clip CLIP: MA-CLIP adapters and Vita-CLIP prompts.

- `vit`: the frozen ViT token pipeline step by step (`encode_frozen_images` equals `visual(x)`).
- `ma_clip.MAAdaptedViT`: temporal, multimodal and joint adapters inside every block, zero-initialised.
- `vita.VitaPromptedViT` / `vita.VitaTextPrompt`: Vita-CLIP's video prompts and learnable text context.
"""

from fsar.train.peft.ma_clip import MAAdaptedViT
from fsar.train.peft.vit import count_parameters, encode_frozen_images
from fsar.train.peft.vita import VitaPromptedViT, VitaTextPrompt

__all__ = ["MAAdaptedViT", "VitaPromptedViT", "VitaTextPrompt", "count_parameters", "encode_frozen_images"]

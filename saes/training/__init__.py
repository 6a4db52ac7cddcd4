"""SAE training: one loop for every variant, for one SAE or many from the same activations.

The rooms: ``loop`` (:func:`saes.training.loop.train`, also ``from saes import train``), ``config``
(the nested, validated :class:`~saes.training.config.RunConfig`), ``step`` (one optimisation step),
``job`` (a job's state between steps: setup, checkpoints, finishing), ``log`` (the JSONL log and
progress), ``activation_sources`` (live capture or activation files on disk), ``shared_stream``
(many SAEs from one forward pass), ``losses``, ``optim``, ``geometric_median``, ``checkpoint``,
``run_status``, ``memory`` (the memory plan), ``distributed`` (data parallel / hook sharding) and
``sweep`` (grids of runs).

Nothing is imported here: ``import saes.training.config`` loads the config alone.
"""

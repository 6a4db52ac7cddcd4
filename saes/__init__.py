"""Sparse autoencoders: the SAE module, selection rules (variants), trainer, evaluation and artifacts."""

"""Evaluators, declared in `config.evaluators` and built by `common.from_config`."""

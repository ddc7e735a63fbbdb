"""Trainers, one per model family; `config.trainer` names the module `jaxvision.train.<name>`."""

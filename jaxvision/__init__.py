"""jaxvision: a JAX research codebase for deep learning on images and video."""

__version__ = "0.1.0"

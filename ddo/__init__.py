"""DDO: denoising diffusion operators (score-based diffusion models in function space).

Importing ``ddo`` loads no plugin and changes no global state; see :func:`ddo.plugins.load_host`.
"""
from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]

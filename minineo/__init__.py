"""minineo: a small, readable, hook-free GPT-2 / GPT-Neo forward pass for interpretability research."""

from minineo.cache import Cache
from minineo.config import Config
from minineo.loading import load
from minineo.model import Model
from minineo.sites import all_names
from minineo.tokenizer import Tokenizer

__all__ = ["Cache", "Config", "Model", "Tokenizer", "all_names", "load"]
__version__ = "0.1.0"

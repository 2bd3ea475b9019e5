"""minineo: a small, readable, hook-free GPT-2 / GPT-Neo forward pass for interpretability research.

The package's rooms: `forward/` (the model), `record/` (site names, the recorder, the Cache),
`checkpoints/` (hub, weights, tokenizer), `data/` (corpora, shards, harvesting), `analysis/`,
`cli/` and `zoo/`. What users import is re-exported here.
"""

import importlib

from minineo import moved

moved.install()  # old import paths (minineo.harvest, minineo.model, ...) stay aliases of the moved modules

from minineo.checkpoints.loading import load
from minineo.checkpoints.tokenizer import Tokenizer
from minineo.config import Config
from minineo.forward.model import Model
from minineo.record.cache import Cache
from minineo.record.sites import all_names

__all__ = ["Cache", "Config", "Model", "Tokenizer", "all_names", "load"]
__version__ = "0.1.0"

# `minineo.sae`, `minineo.corpus` and `minineo.harvest` stay valid attribute paths for the data modules (imported on first
# use, so `import minineo` does not import the `datasets` machinery); `from minineo.data.harvest import ...`.
_DATA_MODULES = {"corpus": "minineo.data.corpus", "harvest": "minineo.data.harvest", "sae": "minineo.sae",
                 "views": "minineo.views"}  # views: the HTML pages, imported on first use too


def __getattr__(name: str):
    if name in _DATA_MODULES:
        return importlib.import_module(_DATA_MODULES[name])
    raise AttributeError(f"module 'minineo' has no attribute {name!r}")

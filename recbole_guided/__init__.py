"""recbole-guided: guided embedding refinement (LLM-rated item attributes) for RecBole."""

from recbole_guided import compat  # noqa: F401  first: undoes RecBole's import-time slow-down (see compat)

from recbole_guided.config import GuidedConfig
from recbole_guided.models import GuidedBERT4Rec, GuidedGRU4Rec, GuidedSASRec
from recbole_guided.quick_start import load_guided_model, run_recbole_guided

__all__ = [
    "GuidedConfig",
    "GuidedSASRec",
    "GuidedBERT4Rec",
    "GuidedGRU4Rec",
    "run_recbole_guided",
    "load_guided_model",
]
__version__ = "0.1.0"

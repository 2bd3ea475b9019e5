"""Analyses researchers run on GPT-2 and GPT-Neo. Each reads a Cache or calls the model with `patch=`;
none re-implements part of the forward pass. Each returns tensors or small dataclasses."""

from minineo.analysis.ablation import BackupHeads, ablate_heads, backup_heads, head_ablation_effects
from minineo.analysis.attribution import Attribution, direct_logit_attribution, head_logit_attribution
from minineo.analysis.circuits import FactoredMatrix, composition_scores, copying_scores, ov_circuit, qk_circuit
from minineo.analysis.embeddings import (EmbeddingAutoencoding, EmbeddingGeometry, embedding_autoencoding,
                                         embedding_geometry)
from minineo.analysis.heads import HeadScores, head_scores, repeated_tokens
from minineo.analysis.ioi import IOIDataset, IOIResult, ioi_analysis, ioi_dataset
from minineo.analysis.lens import LogitLens, logit_lens
from minineo.analysis.tuned_lens import TunedLens, apply_tuned_lens, lens_kl, train_tuned_lens
from minineo.analysis.patching import activation_patching, attribution_patching
from minineo.analysis.path_patching import path_patching
from minineo.analysis.sae_metrics import SAEMetrics, sae_metrics

__all__ = [
    "Attribution", "BackupHeads", "EmbeddingAutoencoding", "EmbeddingGeometry", "HeadScores", "IOIDataset",
    "IOIResult", "LogitLens", "ablate_heads", "activation_patching", "attribution_patching", "backup_heads", "direct_logit_attribution", "embedding_autoencoding",
    "embedding_geometry", "head_ablation_effects", "head_logit_attribution", "head_scores", "ioi_analysis",
    "ioi_dataset", "logit_lens", "repeated_tokens",
    "TunedLens", "apply_tuned_lens", "lens_kl", "train_tuned_lens", "SAEMetrics", "sae_metrics",
    "FactoredMatrix", "composition_scores", "copying_scores", "ov_circuit", "qk_circuit", "path_patching",
]

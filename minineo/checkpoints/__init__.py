"""Checkpoints and text: hub snapshots, safetensors -> parameters (weights/), loading, the tokenizer, token checks."""

"""The data pipeline: corpus reading and packing, the crash-safe shard folder, harvesting activations over a corpus."""

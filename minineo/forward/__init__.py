"""The forward pass: functional pieces, attention (explicit and fused), blocks, the key/value cache, the Model, generation.

It imports the record's recorder and Cache (the instrument it passes every site through), never the analyses,
the data pipeline or the command line.
"""

"""Models trained in this repository (the embedded default model lives in zoo/tiny-neo/)."""

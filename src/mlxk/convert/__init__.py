"""Conversion: GGUF import, mlx_lm quantization, index repair."""

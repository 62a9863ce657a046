"""Inspection: what a model folder is (framework, type, capabilities) and whether it is
whole (health) and runnable here (runtime gate). No mlx, mlx_lm or transformers imports."""

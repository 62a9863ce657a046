"""The engine: loading models (with a fast BLAS), sampling, generation, chat sessions, batching."""

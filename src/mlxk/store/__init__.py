"""The model store: the Hugging Face cache, user workspaces, and model names."""

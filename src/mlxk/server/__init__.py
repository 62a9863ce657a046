"""``mlxk serve``: the OpenAI-compatible server, its protocol adapters and its supervisor."""

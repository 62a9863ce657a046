"""The Hub side: pull (download into the cache), push (upload a workspace), clone (cache → workspace)."""

"""The LLM side: attribute schemas, prompts, backends and the cached scorer that writes ``.guided``."""

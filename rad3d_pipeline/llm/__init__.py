"""The LLM layer: prompts, parsers, a persistent response cache and an async client."""

"""Model adapters: a protocol, a registry, baselines, OpenAI-compatible VLMs, HF 3D VLMs, imports."""

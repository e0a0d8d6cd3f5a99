"""Tasks 1-3: open-ended QA generation (LLM and rules backends), scoring rows, curation."""

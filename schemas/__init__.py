"""Event contracts of the AI-Chat pipeline (models, codec, generated JSON Schema)."""

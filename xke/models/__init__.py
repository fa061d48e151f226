"""Model loading, prompt formatting and per-architecture layer names."""

"""Progressive-decoding image service (FastAPI)."""

"""API extraction (placeholder until the interfaces land; helper A owns this file)."""

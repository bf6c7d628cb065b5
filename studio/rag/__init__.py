"""Grounded answers over a collection: retrieval, prompts, the chain, citations, sessions."""

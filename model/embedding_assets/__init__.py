"""Data files the optional `embeddings` featurizer needs beside its model (no code)."""

"""Weaviate: collection definition, local launcher (binary built from the Go module proxy)."""

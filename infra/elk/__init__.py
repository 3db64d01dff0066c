"""Elasticsearch: index template for the events index, local single-node launcher."""

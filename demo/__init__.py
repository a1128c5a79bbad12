"""The end-to-end demo: real model and real data, indexer, service and SDK together."""

"""Helpers for every test layer: servers, the data tests feed in, reading streams, the mesh driver."""

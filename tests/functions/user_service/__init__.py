"""Specification of the user service: its API, data model, metrics job and local server."""

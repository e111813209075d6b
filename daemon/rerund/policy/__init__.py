"""The YAML policy language (``apiVersion: rerund/v1``): model, loading with located errors,
compiled matching, JSON Schema and policy tests."""

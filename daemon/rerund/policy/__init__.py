"""The YAML policy language (``apiVersion: rerund/v1``): model, loading with located errors,
JSON Schema, failure documents and policy tests.

The compiled form (``PolicySet``) and the matching live in the pure core
(``rerund.core.rules``) because ``decide`` needs them; this package is the part that reads
files.
"""

from rerund.core.rules import PolicySet
from rerund.policy.loader import load_policies

__all__ = ["PolicySet", "load_policies"]

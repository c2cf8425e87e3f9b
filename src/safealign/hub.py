"""Fail fast when the Hugging Face Hub cannot be reached.

Why: without a network, `datasets.load_dataset` and `from_pretrained` spend 50-90 s on
retries and warnings before they fail. One short connection attempt to the hub's endpoint
tells the same thing in at most `TIMEOUT` seconds; when it fails, huggingface_hub and
datasets are switched to offline mode for this process, so what is already in the local
cache still loads at once and anything else fails at once, with safealign's message on
how to pass a local copy.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

log = logging.getLogger("safealign")
TIMEOUT = 3.0
_reachable: bool | None = None


def offline_env() -> bool:
    """Whether the user has already put the hub libraries offline."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))  # fmt: skip


def reachable() -> bool:
    """One TCP connection to the hub's endpoint (`HF_ENDPOINT`), at most `TIMEOUT` seconds; cached per process."""
    global _reachable
    if _reachable is None:
        if offline_env():
            _reachable = False
        else:
            from huggingface_hub import constants

            url = urlparse(constants.ENDPOINT)
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                with socket.create_connection((url.hostname or "", port), timeout=TIMEOUT):
                    _reachable = True
            except OSError:
                _reachable = False
    return _reachable


def go_offline_unless_reachable(what: str) -> bool:
    """Before loading `what` from the hub: if the hub cannot be reached, put the hub libraries offline
    (cached copies still load, nothing else is tried). Returns whether the hub is reachable."""
    if reachable():
        return True
    if not offline_env():
        log.warning("the Hugging Face Hub cannot be reached; loading %s from the local cache only", what)
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import datasets.config

            datasets.config.HF_HUB_OFFLINE = True
        except ImportError:  # pragma: no cover - datasets is a dependency
            pass
    return False

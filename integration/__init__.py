"""Integrations of the ETAP MLA decode kernels into serving stacks.

This folder is installed as the top-level package ``etap_integration``. Each integration is a
submodule that imports its host framework lazily (or not at all), so importing this package never
needs a GPU or the host framework:

- ``etap_integration.flashinfer_etap``: ``EtapMLABackend``, the ``backend="etap"`` implementation
  behind FlashInfer's ``BatchMLAPagedAttentionWrapper`` (see README_flashinfer.md).
"""

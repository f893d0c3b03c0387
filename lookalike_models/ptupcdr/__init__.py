"""PTUPCDR (Zhu et al., WSDM 2022): personalised cross-domain bridges for users with no target-domain activity.

``domains``: the two domains' ratings and the liked-item histories; ``model``: MF, characteristic encoder,
meta bridge (user vector and rating offset), EMCDR's linear bridge; ``training``: their training loops;
``bias``: the bias baseline; ``scorer``: the ``ptupcdr_bridge`` look-alike scorer; ``hybrid``:
``ptupcdr_hybrid``, a warm scorer plus bridges for source-only users. The cold/warm-start rating protocols
are a benchmark's: ``bench/ptupcdr_protocol.py``.
"""

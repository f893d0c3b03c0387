"""PTUPCDR (Zhu et al., WSDM 2022): personalised cross-domain bridges for users with no target-domain activity.

``model``: MF pre-training, characteristic encoder, meta bridge (user vector and rating offset), EMCDR;
``bias``: the bias baseline; ``protocol``: cold/warm-start rating protocols; ``scorer``: the ``ptupcdr_bridge``
look-alike scorer; ``hybrid``: ``ptupcdr_hybrid``, a warm scorer plus bridges for source-only users.
"""

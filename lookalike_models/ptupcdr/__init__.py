"""PTUPCDR (Zhu et al., WSDM 2022): personalised cross-domain bridges for users with no target-domain activity.

``model``: MF pre-training, characteristic encoder, meta bridge, EMCDR; ``protocol``: cold/warm-start rating
protocols; ``scorer``: the ``ptupcdr_bridge`` look-alike scorer.
"""

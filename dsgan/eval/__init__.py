"""Evaluation: FID, IS, KID, precision/recall and density/coverage on the TF FID Inception's features (``fid``,
``features``, ``inception``, ``metrics``) and a run's evaluator and its protocol (``run``); the embedded digits'
FD8 and classifier check live with the digits (``dsgan/digits.py``).

See ``fid.py`` for how the sample set is made independent of the world size and ``inception.py`` for the weights
file.
"""

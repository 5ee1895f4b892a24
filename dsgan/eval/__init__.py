"""Evaluation: FID/IS with the TF FID Inception (``fid``, ``features``, ``inception``, ``metrics``) and a run's
evaluator (``run``); the embedded digits' FD8 and classifier check live with the digits (``dsgan/digits.py``).

See ``fid.py`` for how the sample set is made independent of the world size and ``inception.py`` for the weights
file.
"""

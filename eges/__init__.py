"""EGES: graph embedding with side information (Wang et al., KDD 2018), on Spark and PyTorch.

``eges.pipeline`` is the Spark side (walk job); the torch side reads what it writes through the
contract in :mod:`eges.schema`. Neither side imports the other's framework.
"""

__version__ = "0.1.0"

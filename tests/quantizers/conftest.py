"""The quantizer tests' model: a tiny residual CNN (residual_cnn.py, imported by the tests)."""

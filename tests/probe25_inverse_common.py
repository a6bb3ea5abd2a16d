"""What the files of session 25's inverse-problems probe (tests/test_programs_probe25_inverse_*.py: imaging, complex
gradients and adjoints) share: ``close``, the comparison every test makes."""

import numpy as np


def close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)

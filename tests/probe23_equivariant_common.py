"""What the files of session 23's probe of equivariant graph networks (tests/test_programs_probe23_equivariant_*.py:
molecular networks, irreducible representations, graph layers) share: ``random_rotation``, a random rotation by QR
with the sign fix and ``linalg.det``."""

def random_rotation(torch, seed=1, dtype=None):
    """A random rotation: QR of a Gaussian matrix, Q's columns signed by R's diagonal, a reflection undone."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(3, 3, generator=g, dtype=dtype or torch.float32)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)
    if torch.linalg.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    return Q

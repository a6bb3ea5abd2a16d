"""The examples in PyTorch's own docstrings (``>>>`` blocks of torch/_torch_docs.py, _tensor_docs.py, functional.py,
nn/functional.py, nn/modules, linalg and special), run on chainrule, as tests/docexamples_common.py says: each a
program over the modules whose result must equal the literal expected in tests/docexamples_expected.py and, where
PyTorch is installed, PyTorch's result. That the areas cover about sixty to a hundred examples, each with its
expected literal: this file imports the five files of examples, whose programs register in ``AREAS`` as they are
imported, so that the count is whole when it runs alone."""

from . import (  # noqa: F401  (imported for their programs, which register in AREAS)
    test_programs_docexamples_attributes,
    test_programs_docexamples_creation_pointwise,
    test_programs_docexamples_einsum_linalg,
    test_programs_docexamples_nn,
    test_programs_docexamples_reductions_shapes,
)
from .docexamples_common import AREAS
from .docexamples_expected import EXPECTED


def test_the_areas_cover_about_sixty_to_a_hundred_examples():
    assert 30 <= sum(len(programs) for programs in AREAS.values()) and set(EXPECTED) == {
        name for programs in AREAS.values() for name in programs}

"""Sums of products over shared indices: einsum, and the named products PyTorch code calls
(dot, vdot, inner, outer, mv, mm, bmm, kron, tensordot, cross; the addmm family, which adds a scaled input
to one of them, is in scaled_products.py).

einsum's derivative is another einsum: for y = einsum("ij,jk->ik", a, b),
    dL/da = einsum("ik,jk->ij", dL/dy, b)
i.e. dL/dy in place of y and the operand's own subscripts as the output. Indices that only the
operand has are summed in the forward pass, so its gradient is constant along them (an einsum
with a vector of ones); an index it repeats (a diagonal) is tied to a fresh one by an identity.
"""

import warnings
from math import prod as numpy_prod

from ..backend import xp
from ..errors import refuse_unbroadcastable
from ..graph import program_stacklevel
from ..primitive import Primitive, node_named
from ..tensor import Tensor, tensor_from
from . import shape
from .arranging import movedim
from .axes import dim_index
from .conjugation import conj
from .conversion import refuse_kinds, require_scalar_type, type_name
from .elementwise import row_major
from .linalg import matmul
from .names import names
from .outputs import write_out
from .promotion import common_dtype

# einsum's subscripts: string.ascii_letters, spelled out (importing string costs more than the line)
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Einsum(Primitive):
    """y = einsum(terms -> output, *xs);   dL/dx_k = einsum(output, other terms -> terms[k], dL/dy, other xs)
    (complex: the other xs conjugated, as every product's)"""

    handles_complex = True
    memory_order = None  # the output's labels from the outermost in memory (None: as NumPy lays it out)
    contracted = False  # two operands sharing a summed index of size > 1: PyTorch's bmm of them (batched_product)
    kernel = None  # PyTorch's kernel where it is not einsum's bmm ("addbmm"), read by op observers (FLOP counter)

    @property
    def saved_input_readers(self):  # x_k's values are read only by the other operands' gradients
        operands = range(len(self.terms))
        return tuple(tuple(j for j in operands if j != k) for k in operands)

    def forward(self, *xs):
        if self.memory_order is not None and all(type(x) is xp.ndarray for x in xs):
            if self.contracted:
                return self.batched_product(*xs)
            (ta, tb), (a, b) = self.terms, xs
            return row_major(xp.einsum(f"{ta},{tb}->{self.output}", a, b, optimize=True))  # (an elementwise pair)
        return xp.einsum(f"{','.join(self.terms)}->{self.output}", *xs, optimize=len(xs) > 1)

    def batched_product(self, a, b):
        """The pair's einsum as PyTorch's sumproduct_pair computes it, one batched matmul of the operands laid out
        [shared, own, summed] and [shared, summed, other's], its product viewed back in the output's order: laid
        out as PyTorch's (``memory_order``) and summed in its order."""
        (ta, tb), output = self.terms, self.output
        a, ta = _summed_alone(a, ta, tb + output)
        b, tb = _summed_alone(b, tb, ta + output)
        shared = [c for c in self.memory_order if c in ta and c in tb]
        first_own = next((c for c in self.memory_order if c not in shared), None)
        if first_own is not None and first_own not in ta:  # the second's own come first: the operands swapped
            a, b, ta, tb = b, a, tb, ta
        own = [c for c in self.memory_order if c in ta and c not in tb]
        others = [c for c in self.memory_order if c in tb and c not in ta]
        summed = [c for c in ta if c in tb and c not in output]
        sizes = dict(zip(ta, a.shape)) | dict(zip(tb, b.shape))

        def size(labels):
            return int(numpy_prod([sizes[c] for c in labels]))

        left = a.transpose([ta.index(c) for c in shared + own + summed]).reshape(size(shared), size(own),
                                                                                 size(summed))
        right = b.transpose([tb.index(c) for c in shared + summed + others]).reshape(size(shared), size(summed),
                                                                                   size(others))
        product = xp.matmul(left, right).reshape([sizes[c] for c in shared + own + others])
        return product.transpose([(shared + own + others).index(c) for c in output])

    def backward(self, grad, y, *xs):
        sizes = {label: n for term, x in zip(self.terms, xs) for label, n in zip(term, x.shape)}
        fresh = iter(c for c in LETTERS if c not in sizes)
        grads = []
        factors = [conj(x) for x in xs] if grad._data.dtype.kind == "c" else xs
        for k, (term, x) in enumerate(zip(self.terms, xs)):
            if not x.requires_grad:
                grads.append(None)
                continue
            terms = [self.output] + [t for j, t in enumerate(self.terms) if j != k]
            tensors = [grad] + [o for j, o in enumerate(factors) if j != k]
            available = set("".join(terms))
            target, seen = [], set()
            for label in term:
                if label in seen:  # a repeated index (a diagonal): a fresh index, tied by the identity
                    new = next(fresh)
                    terms.append(label + new)
                    tensors.append(Tensor._make(xp.eye(sizes[label], dtype=grad.dtype)))
                    target.append(new)
                    continue
                seen.add(label)
                if label not in available:  # summed within x alone: the gradient is the same along it
                    terms.append(label)
                    tensors.append(Tensor._make(xp.ones(sizes[label], dtype=grad.dtype)))
                    available.add(label)
                target.append(label)
            grads.append(Einsum.apply(*tensors, terms=tuple(terms), output="".join(target)))
        return tuple(grads)


def _summed_alone(x, term, elsewhere):
    """x with the indices that only it has, and that nothing else keeps, summed out first (as PyTorch's einsum sums
    them before its pairwise product), and its term without them."""
    alone = tuple(i for i, c in enumerate(term) if c not in elsewhere)
    if not alone:
        return x, term
    # (in the operands' dtype, which einsum chose: NumPy's sum would make int32 int64)
    return x.sum(axis=alone, dtype=x.dtype), "".join(c for i, c in enumerate(term) if i not in alone)


def _parse(equation, operands):
    """(terms, output) with '...' spelt out as letters and the implicit output made explicit."""
    equation = equation.replace(" ", "")
    left, arrow, output = equation.partition("->")
    terms = left.split(",")
    if len(terms) != len(operands):
        raise RuntimeError(f"einsum(): {'more' if len(operands) > len(terms) else 'fewer'} operands were provided "
                           f"than specified in the equation {equation!r} ({len(operands)} operands, "
                           f"{len(terms)} subscripts)")
    letters = [c for c in LETTERS if c not in equation]
    ellipsis_dims = 0
    for term, x in zip(terms, operands):
        named = len(term.replace("...", ""))
        if any(not c.isalpha() for c in term.replace("...", "")):
            raise RuntimeError(f"einsum(): invalid subscript given at index in the equation string {equation!r}")
        if ("..." not in term and named != x.ndim) or ("..." in term and named > x.ndim):
            raise RuntimeError(f"einsum(): the number of subscripts in the equation ({named}) does not match the "
                               f"number of dimensions ({x.ndim}) for operand {terms.index(term)}"
                               f"{'' if '...' in term else ' and no ellipsis was given'}")
        if "..." in term:
            ellipsis_dims = max(ellipsis_dims, x.ndim - named)
    broadcast = letters[:ellipsis_dims]
    spelt = []
    for term, x in zip(terms, operands):
        if "..." in term:
            k = x.ndim - len(term.replace("...", ""))
            term = term.replace("...", "".join(broadcast[ellipsis_dims - k:]))
        spelt.append(term)
    if arrow:
        output = output.replace("...", "".join(broadcast))
    else:
        counts = {c: "".join(spelt).count(c) for c in "".join(spelt)}
        output = "".join(broadcast) + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in broadcast))
    if len(set(output)) < len(output):
        raise RuntimeError(f"einsum(): output subscript appears more than once in {equation!r}")
    if set(output) - set("".join(spelt)):
        raise RuntimeError(f"einsum(): output subscript {sorted(set(output) - set(''.join(spelt)))[0]} does not "
                           f"appear in the equation for any input operand")
    return spelt, output, set(broadcast)


def _sublist_subscript(n):
    """One entry of a sublist: Ellipsis, or an int in [0, 52) (0-25 are A-Z, 26-51 a-z, so that
    sorting the letters sorts the ints, as the implicit output needs)."""
    if n is Ellipsis:
        return "..."
    if isinstance(n, int) and 0 <= n < 26:
        return chr(ord("A") + n)
    if isinstance(n, int) and 26 <= n < 52:
        return chr(ord("a") + n - 26)
    raise ValueError("einsum(): subscript in subscript list is not within the valid range [0, 52)")


def _from_sublists(args):
    """(equation, operands) from einsum's sublist form: op1, sublist1, op2, sublist2, ..., [output]."""
    operands, terms = args[0::2], args[1::2]
    output = None
    if len(args) % 2 == 1:
        operands, output = operands[:-1], operands[-1]
    equation = ",".join("".join(_sublist_subscript(n) for n in term) for term in terms)
    if output is not None:
        equation += "->" + "".join(_sublist_subscript(n) for n in output)
    return equation, operands


@names("einsum", method=False)
def einsum(equation, *operands):
    """Sum of products over the indices the equation names, as PyTorch's torch.einsum
    ("ij,jk->ik" is a matrix product; "...", implicit outputs and diagonals ("ii->i") work).
    The sublist form names the indices by ints and Ellipsis instead:
    einsum(a, [..., 0, 1], b, [..., 1, 2], [..., 0, 2]) is einsum("...ij,...jk->...ik", a, b)."""
    if not isinstance(equation, str):
        equation, operands = _from_sublists((equation,) + operands)
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    operands = [x if isinstance(x, Tensor) else tensor_from(x) for x in operands]
    terms, output, _ = _parse(equation, operands)
    sizes = {}
    for k, (term, x) in enumerate(zip(terms, operands)):
        for label, n in zip(term, x.shape):
            if label in sizes and sizes[label] != n:
                if 1 not in (n, sizes[label]):  # a size-1 dim broadcasts, named or under '...', as PyTorch
                    raise RuntimeError(f"einsum(): subscript {label} has size {n} for operand {k} which does not "
                                       f"broadcast with previously seen size {sizes[label]}")
            sizes[label] = max(n, sizes.get(label, n))
    # a size-1 broadcast dim against a larger one is dropped from that operand (its gradient sums it)
    for k, (term, x) in enumerate(zip(terms, operands)):
        dropped = [i for i, label in enumerate(term) if x.shape[i] == 1 and sizes[label] > 1]
        if dropped:
            terms[k] = "".join(c for i, c in enumerate(term) if i not in dropped)
            operands[k] = shape.reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in dropped))
    dtype = _pairwise_dtype(terms, output, operands, sizes)
    operands = [x if x.dtype == dtype else x.to(dtype) for x in operands]
    memory_order, contracted = _pytorchs_memory_order(terms, output, sizes)
    return Einsum.apply(*operands, terms=tuple(terms), output=output, memory_order=memory_order,
                        contracted=contracted)


def _pytorchs_memory_order(terms, output, sizes):
    """(memory order, contracted): the memory order (the output's labels from the outermost) of PyTorch's result
    for two operands, and whether bmm contracts them. A pair contracted by bmm (a summed index of size > 1 that
    both have) gives the output's indices both operands have,
    then the first's own, then the second's, each in the output's order, the two own groups swapped where all the
    second's come first in the output (PyTorch's sumproduct_pair: bmm of the operands laid out [shared, own,
    summed], viewed back; 'bik,bjk->bij' is row-major, 'bsic,bsjd->bijcd' is b, i, c, j, d in memory); any other
    pair is multiplied elementwise into a row-major result. So a view of the result shares its memory, as
    PyTorch's does (NumPy's einsum lays 'bik,bjk->bij' out b, j, i). None (NumPy's layout) for one operand, more
    than two, or a diagonal."""
    if len(terms) != 2 or any(len(set(term)) < len(term) for term in terms):
        return None, False
    first, second = (set(term) for term in terms)
    if not any(sizes[label] > 1 for label in (first & second) - set(output)):
        return output, False
    shared = [c for c in output if c in first and c in second]
    own = [c for c in output if c in first and c not in second]
    others = [c for c in output if c in second and c not in first]
    if own and others and output.index(others[-1]) < output.index(own[0]):
        own, others = others, own  # (PyTorch's swap_lo_ro: the operands swapped so that bmm writes them in order)
    return "".join(shared + own + others), True


def _pairwise_dtype(terms, output, operands, sizes):
    """The dtype of einsum's result, or PyTorch's refusal. PyTorch takes the operands pairwise, left to right. An
    index whose last operand is the current one (neither the output nor a later operand has it) leaves the pair:
    summed on the side holding it with size > 1 where the other side has size 1 (that sum, as any, turns bool and
    integers into int64: "bij->b" of a mask counts, in int64), and otherwise contracted by bmm, which needs one dtype
    and has no bool kernel; a pair with nothing contracted is multiplied elementwise, which promotes (a float mask
    by a one_hot of int64, "se,sc->sec", is float). The operands are unsqueezed to one rank first, so a 0-d one
    promotes as any other; with an empty operand the result is zeros of the promoted dtype, nothing contracted."""
    if any(0 in x.shape for x in operands):
        return common_dtype(tuple(x.dtype for x in operands))
    dtype, labels = (operands[0].dtype, set(terms[0])) if operands else (None, set())
    later = set(output).union(*terms[1:])
    if len(operands) == 1 and labels - later or any(sizes[label] > 1 for label in labels - later):
        dtype = _sum_dtype(dtype)  # (among several operands, a dim of size 1 is squeezed away, not summed)
    labels &= later
    for k in range(1, len(operands)):
        later = set(output).union(*terms[k + 1:])
        own, other, contracted = set(terms[k]), operands[k].dtype, False
        for label in (labels | own) - later:  # (a label an operand lacks is a dim of size 1 there)
            if sizes[label] == 1:
                continue
            if label not in labels:
                other = _sum_dtype(other)  # PyTorch sums the operand's dim where the result's has size 1
            elif label not in own:
                dtype = _sum_dtype(dtype)
            else:
                contracted = True
        if contracted:
            refuse_kinds(xp.empty(0, dtype=dtype), "bmm", "b")
            if other != dtype:
                raise RuntimeError(f"expected scalar type {type_name(dtype)} but found {type_name(other)}")
        else:
            dtype = common_dtype((dtype, other))
        labels = (labels | own) & later
    return dtype


def _sum_dtype(dtype):
    """A sum's dtype in PyTorch: bool and integers accumulate in int64."""
    return xp.dtype(xp.int64) if dtype.kind in "biu" else dtype


def _check_ndim(x, ndim, op, name):
    if x.ndim != ndim:
        raise RuntimeError(f"{op}: Expected {ndim}-D argument {name}, but got {x.ndim}-D (shape {tuple(x.shape)})")


def write_product(result, out):
    """``write_out`` for PyTorch's matrix products (dot, mv, mm, bmm, the addmm family, tensordot): their
    out= must have the result's dtype exactly, as their kernels cast into no other (a float64 out of a
    float32 product is refused), where the elementwise ops (outer, addr, kron) write into any wider one."""
    return write_out(result, out, dtype=result.dtype)


@names("vdot")
@node_named("VdotBackward0")
def vdot(input, other, *, out=None):
    """Σ_i conj(x_i) y_i: dot with the first vector conjugated (dot itself, for real tensors)."""
    return dot(conj(input), other, out=out)


@names("dot")
def dot(input, tensor, *, out=None):
    """Σ_i x_i y_i of two vectors of the same length (the second is ``tensor=``, PyTorch's keyword)."""
    other = tensor
    if input.ndim != 1 or other.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {input.ndim}D and {other.ndim}D tensors")
    if input.shape != other.shape:
        raise RuntimeError(f"inconsistent tensor size, expected tensor [{input.shape[0]}] and src [{other.shape[0]}] "
                           f"to have the same number of elements, but got {input.shape[0]} and {other.shape[0]} "
                           "elements respectively")
    return write_product(matmul(input, other), out)  # (two dtypes refused there, in dot's words)


@names("inner")
def inner(input, other, *, out=None):
    """Σ over the last dim of both: shape input.shape[:-1] + other.shape[:-1] (a product for scalars)."""
    if input.ndim == 0 or other.ndim == 0:
        return write_out(input * other, out)
    if input.shape[-1] != other.shape[-1]:
        raise RuntimeError(f"inner() the last dimension must match on both input tensors but got shapes "
                           f"{list(input.shape)} and {list(other.shape)}")
    if input.dtype != other.dtype:  # (a 0-d operand above is a product, which promotes)
        raise RuntimeError("both inputs should have same dtype")
    refuse_kinds(input, "dot" if input.ndim == other.ndim == 1 else "addmm_impl_cpu_", "b")
    a, b = LETTERS[:input.ndim - 1], LETTERS[input.ndim - 1:input.ndim + other.ndim - 2]
    return write_out(Einsum.apply(input, other, terms=(a + "z", b + "z"), output=a + b), out)


@names("outer", "ger")
def outer(input, vec2, *, out=None):
    """The matrix x_i y_j of two vectors."""
    _check_ndim(input, 1, "outer", "self")
    _check_ndim(vec2, 1, "outer", "vec2")
    return write_out(shape.unsqueeze(input, 1) * shape.unsqueeze(vec2, 0), out)


@names("mv")
def mv(input, vec, *, out=None):
    """Matrix times vector."""
    if input.ndim != 2 or vec.ndim != 1:
        raise RuntimeError(f"vector + matrix @ vector expected, got {input.ndim}, {vec.ndim}")
    if input.shape[1] != vec.shape[0]:
        raise RuntimeError(f"size mismatch, got input ({input.shape[0]}), mat ({input.shape[0]}x{input.shape[1]}), "
                           f"vec ({vec.shape[0]})")
    return write_product(matmul(input, vec), out)


def _check_matrices(a, b, op, names_=("self", "mat2")):
    if a.ndim != 2:
        raise RuntimeError(f"{names_[0]} must be a matrix (got shape {tuple(a.shape)})")
    if b.ndim != 2:
        raise RuntimeError(f"{names_[1]} must be a matrix (got shape {tuple(b.shape)})")
    if a.shape[1] != b.shape[0]:
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({a.shape[0]}x{a.shape[1]} and "
                           f"{b.shape[0]}x{b.shape[1]})")


@names("mm", functions=("spmm",))
def mm(input, mat2, *, out=None):
    """Matrix times matrix (both 2-D; matmul broadcasts, mm does not). ``autograd.spmm`` is the same
    product, as PyTorch's: its first factor sparse (autograd.sparse: pygcn's ``torch.spmm(adj, support)``) or
    dense."""
    _check_matrices(input, mat2, "mm")
    return write_product(matmul(input, mat2), out)


def _check_batches(a, b):
    for x, name in ((a, "batch1"), (b, "batch2")):
        if x.ndim != 3:
            raise RuntimeError(f"{name} must be a 3D tensor (got shape {tuple(x.shape)})")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise RuntimeError(f"Expected size for first two dimensions of batch2 tensor to be: [{a.shape[0]}, "
                           f"{a.shape[2]}] but got: [{b.shape[0]}, {b.shape[1]}].")


@names("bmm")
@node_named("BmmBackward0")
def bmm(input, mat2, *, out=None):
    """A batch of matrix products: (b, n, m) @ (b, m, p) gives (b, n, p); no broadcasting."""
    _check_batches(input, mat2)
    return write_product(matmul(input, mat2), out)


@names("kron")
def kron(input, other, *, out=None):
    """The Kronecker product: every element of input times the whole of other, laid out in blocks."""
    ndim = max(input.ndim, other.ndim)
    a = shape.reshape(input, (1,) * (ndim - input.ndim) + tuple(input.shape))
    b = shape.reshape(other, (1,) * (ndim - other.ndim) + tuple(other.shape))
    # a's dim i becomes (n_i, 1) and b's (1, m_i): their product is the (n_i, m_i) block layout
    pairs_a = shape.reshape(a, tuple(m for n in a.shape for m in (n, 1)))
    pairs_b = shape.reshape(b, tuple(m for n in b.shape for m in (1, n)))
    return write_out(shape.reshape(pairs_a * pairs_b, tuple(n * m for n, m in zip(a.shape, b.shape))), out)


@names("tensordot", method=False)
def tensordot(a, b, dims=2, out=None):
    """Σ over dims of a and b paired up: the last ``dims`` of a with the first of b, or the listed pairs."""
    if a.dtype != b.dtype:
        raise RuntimeError("both inputs should have same dtype")
    refuse_kinds(a, "addmm_impl_cpu_", "b")  # (a tensordot is a matrix product: no bool kernel in PyTorch)
    if isinstance(dims, int):
        if dims < 0:
            raise RuntimeError(f"tensordot expects dims >= 0, but got dims={dims}")
        dims_a, dims_b = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        dims_a, dims_b = ([d] if isinstance(d, int) else list(d) for d in dims)
    dims_a = [d % a.ndim for d in dims_a]
    dims_b = [d % b.ndim for d in dims_b]
    letters = iter(LETTERS)
    term_a = [next(letters) for _ in range(a.ndim)]
    term_b = [next(letters) for _ in range(b.ndim)]
    for i, j in zip(dims_a, dims_b):
        if a.shape[i] != b.shape[j]:
            raise RuntimeError(f"contracted dimensions need to match, but first has size {a.shape[i]} in dim {i} "
                               f"and second has size {b.shape[j]} in dim {j}")
        term_b[j] = term_a[i]
    output = [c for i, c in enumerate(term_a) if i not in dims_a] + [c for j, c in enumerate(term_b) if j not in dims_b]
    return write_product(Einsum.apply(a, b, terms=("".join(term_a), "".join(term_b)), output="".join(output)), out)


@node_named("LinalgCrossBackward0")
def linalg_cross(input, other, *, dim=-1, out=None):
    """The cross product of 3-vectors along dim: (a₂b₃ - a₃b₂, a₃b₁ - a₁b₃, a₁b₂ - a₂b₁), as the
    einsum ε_ijk a_j b_k with the Levi-Civita symbol ε."""
    if input.ndim != other.ndim:
        raise RuntimeError("linalg.cross: inputs must have the same number of dimensions.")
    dim_index(dim, input.ndim)  # (PyTorch's IndexError for a dim out of range)
    if input.shape[dim] != 3 or other.shape[dim] != 3:
        raise RuntimeError(f"linalg.cross: inputs dimension {dim} must have length 3. Got {input.shape[dim]} "
                           f"and {other.shape[dim]}")
    refuse_unbroadcastable(input.shape, other.shape)  # (PyTorch's RuntimeError, naming the sizes and the dim)
    require_scalar_type((input, other))
    levi_civita = xp.zeros((3, 3, 3))
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        levi_civita[i, j, k], levi_civita[i, k, j] = 1.0, -1.0
    a, b = movedim(input, dim, -1), movedim(other, dim, -1)
    dtype = (a._data[..., :1] * b._data[..., :1]).dtype
    product = einsum("ijk,...j,...k->...i", Tensor._make(levi_civita.astype(dtype)), a, b)
    return write_out(movedim(product, -1, dim), out, dtype=product.dtype)  # (PyTorch casts into no other dtype)


@names("cross")
def cross(input, other, dim=None, *, out=None):
    """torch.cross: linalg.cross along dim, or, when dim is None, along input's first dim of size 3 (deprecated:
    PyTorch's warning; linalg.cross's default, the last dim, is to replace it)."""
    if dim is None:
        warnings.warn("Using torch.cross without specifying the dim arg is deprecated.\nPlease either pass the dim "
                      "explicitly or simply use torch.linalg.cross.\nThe default value of dim will change to agree "
                      "with that of linalg.cross in a future release.", UserWarning, stacklevel=program_stacklevel())
        dim = next((d for d, n in enumerate(input.shape) if n == 3), None)
        if dim is None:
            raise RuntimeError("no dimension of size 3 in input")
    return linalg_cross(input, other, dim=dim, out=out)

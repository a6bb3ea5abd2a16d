"""Spatial transformers (Jaderberg et al., 2015): ``F.affine_grid`` and ``F.grid_sample``, and PyTorch's
top-level ``autograd.affine_grid_generator(theta, size, align_corners)`` and ``grid_sampler(input, grid,
interpolation_mode, padding_mode, align_corners)`` (with ``grid_sampler_2d``/``_3d``: the modes as integer
codes, nothing optional).

``affine_grid`` maps each output position, in normalised coordinates p ∈ [−1, 1] (x along the width first,
then y, then z), through a batch of affine matrices θ: grid[n, …] = θ[n] (p, 1).

``grid_sample`` reads input (N, C, [D,] H, W) at those normalised points. Each coordinate g becomes a
position in pixels,

    x = (g + 1)/2 · (size − 1)         (align_corners: −1 and 1 are the centres of the corner pixels)
    x = ((g + 1) · size − 1)/2          (otherwise: −1 and 1 are the outer edges of the corner pixels),

then 'border' clamps it to [0, size − 1] and 'reflection' reflects it about the edges (the centres or
the outer edges, as align_corners says) before clamping; 'zeros' reads 0 outside. 'bilinear' (trilinear
for volumes) blends the 2ᵈ neighbours with weights Π (1 − |x − corner|); 'nearest' takes the nearest
(halves to even, as PyTorch's nearbyint); 'bicubic' (images only) blends the 4 × 4 neighbours with
interpolate's cubic convolution weights, the padding map applied to each neighbour's position instead
(PyTorch's order).

A point that no input position can stand for follows PyTorch's volume kernel (its CUDA kernels too): 'border'
and 'reflection' take a nan (and a reflected ±inf) to the last pixel, though the backward reads nothing there (its
gradients are 0, as PyTorch's backward clamps differently); for volumes a nan, ±inf or beyond-int coordinate left
after the padding map reads outside (0, not nan). (PyTorch's vectorised image kernel lets such points through.)

The padding maps are piecewise linear, so each is written x ↦ s·x + b with s ∈ {−1, 0, 1} read off in
NumPy: PyTorch's gradients with respect to the grid (0 at and beyond a clamped edge, the sign flipped
in a reflection). The reads are ``GatherFlat`` (its gradient a scatter-add) and the weights are Tensor
arithmetic on the grid, so gradients reach both the input and the grid, to every order.
"""

import itertools
import warnings

from ..backend import int64, xp
from ..graph import is_grad_enabled, program_stacklevel
from ..index_watching import watches_arguments
from ..primitive import named_node
from ..ranges import _spaced_points
from ..tensor import Tensor, tensor_from
from .conversion import refuse_kinds, type_name
from .cubic_convolution import cubic_weights
from .elementwise import where
from .names import names
from .pooling import GatherFlat

_ALIGN_WARNING = ("Default grid_sample and affine_grid behavior has changed to align_corners=False since 1.3.0. "
                  "Please specify align_corners=True if the old behavior is desired. See the documentation of "
                  "grid_sample for details.")


def _base_coordinates(size, align_corners, dtype):
    """The normalised coordinates of ``size`` pixels: their centres (align_corners: −1 … 1), rounded as
    PyTorch's: its linspace in the dtype (not NumPy's, from float64), then · (size − 1) and / size each
    rounded. An ulp decides which pixels' difference a grid point at a pixel centre (the identity's)
    takes its gradient from."""
    if size <= 1:
        return xp.zeros(size, dtype=dtype)
    steps = _spaced_points(-1.0, 1.0, size, dtype)
    return steps if align_corners else steps * dtype.type(size - 1) / dtype.type(size)


def affine_grid(theta, size, align_corners=None):
    """The sampling grid (N, H, W, 2) of θ (N, 2, 3) for size (N, C, H, W), or (N, D, H, W, 3) of θ (N, 3, 4)
    for size (N, C, D, H, W): grid[n, …, :] = θ[n] · (x, y[, z], 1). (align_corners None: False, with
    PyTorch's warning.)"""
    if align_corners is None:
        warnings.warn(_ALIGN_WARNING, stacklevel=program_stacklevel())
        align_corners = False
    return affine_grid_generator(theta, size, align_corners)


@names("affine_grid_generator", method=False)
def affine_grid_generator(theta, size, align_corners):
    """PyTorch's top-level ``affine_grid_generator``: ``affine_grid`` with ``align_corners`` required."""
    if not theta.is_floating_point():
        raise ValueError(f"Expected theta to have floating point type, but got {theta.dtype}")
    size = tuple(size)
    if len(size) not in (4, 5):
        raise NotImplementedError(f"affine_grid only supports 4D and 5D sizes, for 2D and 3D affine transforms, "
                                  f"respectively. Got size {list(size)}.")
    spatial = len(size) - 2
    if theta.ndim != 3 or tuple(theta.shape[1:]) != (spatial, spatial + 1):
        raise ValueError(f"Expected a batch of {spatial}D affine matrices of shape Nx{spatial}x{spatial + 1} for "
                         f"size {list(size)}. Got {tuple(theta.shape)}.")
    if theta.shape[0] != size[0]:  # (PyTorch's batched product of the base grid and θ says so)
        raise RuntimeError(f"Expected size for first two dimensions of batch2 tensor to be: [{size[0]}, "
                           f"{spatial + 1}] but got: [{theta.shape[0]}, {spatial + 1}].")
    if align_corners and min(size[2:]) == 1:
        warnings.warn("Since version 1.3.0, affine_grid behavior has changed for unit-size grids when "
                      "align_corners=True. This is not an intended use case of affine_grid. See the documentation "
                      "of affine_grid for details.", stacklevel=program_stacklevel())
    elif min(size) <= 0:
        raise ValueError(f"Expected non-zero, positive output size. Got {list(size)}")
    dtype = theta._data.dtype
    # base[..., k] over the spatial positions ([D,] H, W) in C order: coordinate k (x first) runs along
    # axis spatial − 1 − k; the last is 1, for θ's translation
    grids = xp.meshgrid(*[_base_coordinates(s, align_corners, dtype) for s in size[2:]], indexing="ij")
    base = xp.stack(list(grids[::-1]) + [xp.ones(size[2:], dtype=dtype)], axis=-1).reshape(-1, spatial + 1)
    grid = tensor_from(base) @ theta.transpose(1, 2)  # (N, positions, spatial)
    return grid.reshape(size[0], *size[2:], spatial)


def _unnormalize(coordinate, size, align_corners):
    if align_corners:
        return (coordinate + 1) * ((size - 1) / 2)
    return ((coordinate + 1) * size - 1) / 2


def _reflect(x, twice_low, twice_high):
    """PyTorch's reflect_coordinates: x reflected into [low, high] (halves given doubled); with the slope ±1."""
    if twice_low == twice_high:
        return xp.zeros_like(x), xp.zeros_like(x)
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    shifted = x - low
    slope = xp.where(shifted < 0, -1.0, 1.0).astype(x.dtype)  # (NumPy's where of two floats is float64)
    shifted = xp.abs(shifted)
    extra = xp.fmod(shifted, span)
    even = xp.floor(shifted / span) % 2 == 0
    return xp.where(even, extra + low, span - extra + low), xp.where(even, slope, -slope)


def _clip(x, size):
    """x clamped to [0, size − 1], with slope 0 at and beyond the edges (PyTorch's clip_coordinates,
    min(size − 1, max(x, 0)) in C++, which takes a nan to the last pixel: so does its reflection of ±inf)."""
    inside = (x > 0) & (x < size - 1)
    return xp.where(xp.isnan(x), size - 1, xp.clip(x, 0, size - 1)).astype(x.dtype), inside.astype(x.dtype)


_OUTSIDE = -100.0  # where PyTorch's volume kernel puts a point beyond an int's range: outside any input


def _source(coordinate, size, padding_mode, align_corners, volume):
    """The position in pixels that grid coordinate ``coordinate`` reads, after the padding map; and where the
    padding map met a nan (see _sampled)."""
    x = _unnormalize(coordinate, size, align_corners)
    if padding_mode == "zeros" and not volume:  # (the position as it is: no map, nothing read outside)
        return x, None
    value, slope = x._data, xp.ones_like(x._data)
    if padding_mode == "reflection":
        value, slope = _reflect(value, 0, 2 * (size - 1)) if align_corners else _reflect(value, -1, 2 * size - 1)
    unclipped_nan = None
    if padding_mode != "zeros":
        if volume:  # (only a volume's clamp reads it: _unread_in_backward)
            unclipped_nan = xp.isnan(value)
        value, inside = _clip(value, size)
        slope = slope * inside
    if volume:
        # PyTorch's safe_downgrade_to_int_range (its volume kernel; the vectorised image kernel lets a nan through
        # to the output): a nan, ±inf or beyond-int point reads outside, so the sample is 0 and not nan
        beyond = ~xp.isfinite(value) | (value > 2 ** 31 - 2) | (value < -2 ** 31)
        value, slope = xp.where(beyond, _OUTSIDE, value).astype(value.dtype), xp.where(beyond, 0, slope)
    if not xp.isfinite(x._data).all():  # a point at ±inf or nan maps to a constant: s = 0, and 0·inf would be nan
        x = where(Tensor._make(xp.isfinite(x._data)), x, 0.0)
    # s·x + b, b = value − s·x: the value of the map and its derivative s
    return x * Tensor._make(slope.astype(value.dtype)) + Tensor._make(value - slope * x._data), unclipped_nan


def _read(input, positions, sizes):
    """input at integer positions (one array per spatial axis, each (N, *out)); 0 where one falls outside."""
    n, c = input.shape[:2]
    inside = xp.ones(positions[0].shape, dtype=bool)
    flat = xp.zeros(positions[0].shape, dtype=int64)
    for position, size in zip(positions, sizes):
        inside &= (position >= 0) & (position < size)
        flat = flat * size + xp.clip(position, 0, size - 1)
    indices = xp.broadcast_to(flat[:, None], (n, c) + flat.shape[1:])
    values = GatherFlat.apply(input, indices=xp.ascontiguousarray(indices), overlapping=True)
    if inside.all():
        return values
    return where(Tensor._make(inside[:, None]), values, 0.0)


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """Sample input (N, C, H, W) at grid (N, H_out, W_out, 2) (or volumes, (N, C, D, H, W) at
    (N, D_out, H_out, W_out, 3)): out[n, :, …] = input[n, :] read at the point grid[n, …] ∈ [−1, 1]ᵈ."""
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise ValueError(f"nn.functional.grid_sample(): expected mode to be 'bilinear', 'nearest' or 'bicubic', "
                         f"but got: '{mode}'")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"nn.functional.grid_sample(): expected padding_mode to be 'zeros', 'border', or "
                         f"'reflection', but got: '{padding_mode}'")
    if align_corners is None:
        warnings.warn(_ALIGN_WARNING, stacklevel=program_stacklevel())
        align_corners = False
    return _sample(input, grid, mode, padding_mode, align_corners)


_MODES = ("bilinear", "nearest", "bicubic")  # PyTorch's codes of interpolation_mode, 0, 1, 2
_PADDING_MODES = ("zeros", "border", "reflection")  # and of padding_mode


@names("grid_sampler", method=False)
def grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners):
    """PyTorch's top-level ``grid_sampler``: ``grid_sample`` with the modes as PyTorch's integer codes
    (interpolation 0 bilinear, 1 nearest, 2 bicubic; padding 0 zeros, 1 border, 2 reflection) and
    ``align_corners`` required."""
    for name, code, choices in (("interpolation_mode", interpolation_mode, _MODES),
                                ("padding_mode", padding_mode, _PADDING_MODES)):
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < len(choices):
            listed = ", ".join(f"{k} ({choice})" for k, choice in enumerate(choices))
            raise RuntimeError(f"grid_sampler(): expected {name} to be one of {listed}, but got {code!r}")
    if not isinstance(align_corners, bool):
        raise TypeError(f"grid_sampler(): argument 'align_corners' (position 5) must be bool, not "
                        f"{type(align_corners).__name__}")
    return _sample(input, grid, _MODES[interpolation_mode], _PADDING_MODES[padding_mode], align_corners)


def _sampler_of(spatial):
    name = f"grid_sampler_{spatial}d"

    def sampler(input, grid, interpolation_mode, padding_mode, align_corners):
        if input.ndim != spatial + 2 or grid.ndim != spatial + 2:
            raise RuntimeError(f"grid_sampler(): expected {spatial + 2}D input and grid with same number of "
                               f"dimensions, but got input with sizes {list(input.shape)} and grid with sizes "
                               f"{list(grid.shape)}")
        return grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners)

    sampler.__name__ = sampler.__qualname__ = name
    sampler.__doc__ = f"PyTorch's top-level ``{name}``: ``grid_sampler`` of {spatial + 2}-d inputs only."
    return names(name, method=False)(sampler)


grid_sampler_2d = _sampler_of(2)
grid_sampler_3d = _sampler_of(3)


@watches_arguments("grid")  # (PyTorch's GridSampler2DBackward0 saves it: writing it refuses)
def _sample(input, grid, mode, padding_mode, align_corners):
    """grid_sample's checks of the shapes and dtypes, then its maths (the modes named); its node is PyTorch's
    kernel's, GridSampler2DBackward0 or GridSampler3DBackward0."""
    output = _sampled(input, grid, mode, padding_mode, align_corners)
    return named_node(output, None, f"GridSampler{input.ndim - 2}DBackward0", (input, grid))


def _check(input, grid, mode):
    """PyTorch's checks, in its order: the batch, the grid's last size and the spatial sizes first (its common
    check), then the number of dims (4 picks the image kernel, anything else the volume kernel), then the
    kernel's dtype (its loops are floating point only), then the grid's dtype (the input's, as it reads it)."""
    described = f"input with sizes {list(input.shape)} and grid with sizes {list(grid.shape)}"
    if input.shape[0] != grid.shape[0]:
        raise RuntimeError(f"grid_sampler(): expected grid and input to have same batch size, but got {described}")
    if grid.shape[-1] != input.ndim - 2:
        raise RuntimeError(f"grid_sampler(): expected grid to have size {input.ndim - 2} in last dimension, but got "
                           f"grid with sizes {list(grid.shape)}")
    for dim in range(2, input.ndim):
        if input.shape[dim] == 0:
            raise RuntimeError(f"grid_sampler(): expected input to have non-empty spatial dimensions, but input has "
                               f"sizes {list(input.shape)} with dimension {dim} being empty")
    dims = 4 if input.ndim == 4 else 5
    if input.ndim != dims or grid.ndim != dims:
        raise RuntimeError(f"grid_sampler(): expected {dims}D input and grid with same number of dimensions, but got "
                           f"{described}")
    if mode == "bicubic" and dims == 5:
        raise RuntimeError("grid_sampler(): bicubic interpolation only supports 4D input")
    refuse_kinds(input, "grid_sampler_2d_cpu_kernel_impl" if dims == 4 else "grid_sampler3d_cpu", "biuc")
    if grid.dtype != input.dtype:
        raise RuntimeError(f"expected scalar type {type_name(input.dtype)} but found {type_name(grid.dtype)}")


def _sampled(input, grid, mode, padding_mode, align_corners):
    _check(input, grid, mode)
    spatial = input.ndim - 2
    sizes = input.shape[2:]
    if mode == "bicubic":
        return _bicubic(input, grid, sizes, padding_mode, align_corners)
    # the grid's last axis lists x (width) first: input axis a is grid coordinate spatial − 1 − a
    sources, nans = zip(*(_source(grid[..., spatial - 1 - a], sizes[a], padding_mode, align_corners, spatial == 3)
                          for a in range(spatial)))
    if mode == "nearest":
        output = _read(input, [xp.rint(s._data).astype(xp.int64) for s in sources], sizes)
        if grid.requires_grad and is_grad_enabled():
            # a weight of 1 that the grid's graph reaches (its gradient where(never, ·, 0)): PyTorch's dL/dgrid
            # is zeros (not None), and under create_graph dL/dinput depends on the grid and dL/dgrid on the
            # input, as PyTorch's (a gradient penalty through a nearest read is zeros, not an error)
            never = Tensor._make(xp.zeros(grid.shape[:-1], dtype=bool))
            output = output * where(never, grid[..., 0], 1.0).unsqueeze(1)
        return _unread_in_backward(output, nans, spatial, padding_mode)
    lows = [xp.floor(s._data) for s in sources]
    output = None
    for corner in itertools.product((0, 1), repeat=spatial):
        weight = None
        for source, low, bit in zip(sources, lows, corner):
            # 1 − |x − corner|: x − ⌊x⌋ for the upper neighbour, ⌊x⌋ + 1 − x for the lower
            factor = source - Tensor._make(low) if bit else Tensor._make(low + 1) - source
            weight = factor if weight is None else weight * factor
        term = _read(input, [(low + bit).astype(xp.int64) for low, bit in zip(lows, corner)], sizes)
        term = term * weight.unsqueeze(1)
        output = term if output is None else output + term
    return _unread_in_backward(output, nans, spatial, padding_mode)


def _unread_in_backward(output, nans, spatial, padding_mode):
    """PyTorch's volume backward clamps a coordinate without taking a nan to the edge (its forward does), so a
    point whose padding map met a nan reads outside there: its value is the edge's, its gradients (to the input
    and to every coordinate of the point) are 0."""
    if spatial != 3 or padding_mode == "zeros":
        return output
    unread = nans[0] | nans[1] | nans[2]  # (a volume's three coordinates)
    if not unread.any():
        return output
    return where(Tensor._make(unread[:, None]), output.detach(), output)


def _tap(position, size, padding_mode, align_corners):
    """The pixel a bicubic neighbour at integer ``position`` reads, after the padding map."""
    if padding_mode == "reflection":
        position = (_reflect(position, 0, 2 * (size - 1)) if align_corners else
                    _reflect(position, -1, 2 * size - 1))[0]
    if padding_mode != "zeros":
        position = _clip(position, size)[0]
    return position.astype(xp.int64)


def _bicubic(input, grid, sizes, padding_mode, align_corners):
    """Σ_{i,j} W(t_y)_i W(t_x)_j · input at (⌊y⌋ − 1 + i, ⌊x⌋ − 1 + j), t = x − ⌊x⌋ (the weights as
    Tensor arithmetic on the grid: its gradient)."""
    sources = [_unnormalize(grid[..., 1 - a], sizes[a], align_corners) for a in range(2)]
    floors = [xp.floor(source._data) for source in sources]
    weights = [cubic_weights(source - Tensor._make(floor)) for source, floor in zip(sources, floors)]
    output = None
    for i in range(4):
        row = _tap(floors[0] - 1 + i, sizes[0], padding_mode, align_corners)
        for j in range(4):
            column = _tap(floors[1] - 1 + j, sizes[1], padding_mode, align_corners)
            term = _read(input, [row, column], sizes) * (weights[0][i] * weights[1][j]).unsqueeze(1)
            output = term if output is None else output + term
    return output

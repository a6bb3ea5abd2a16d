"""The op modules ``import autograd`` leaves out, and the names each declares (``names`` and ``return_type``
where its ops are defined): linear algebra's factorizations, the gamma family, sorting, the contractions
(``mm``, ``einsum``), the samplers (``bernoulli``, ``uniform_``), cumulative ops, splitting, diagonals,
masking, statistics, the norms and distances, the normalizations (``layer_norm``, ``batch_norm``), embeddings,
the bilinear map, pixel shuffling, the number-theoretic and number-format ops (``gcd``, ``frexp``, ``erfc``),
``torch._check`` and its kin, DLPack, hashing, fake quantization, the STFT, the fused ``add*`` products, the
activations beyond ReLU, sigmoid and tanh (``hardshrink``, ``prelu``, ``selu``, the piecewise-linear ones, GELU's
nodes), the repeating, reversing and dim-moving ops (``repeat``, ``flip``, ``movedim``), the index-vector ops
(``index_select``, ``index_add``, ``take``, ``put``) and gathering and scattering along a dim (``gather``,
``scatter_add``), ``amax``/``amin`` and the NaN-skipping reductions, and the Gaussian's tails (``special.ndtri``,
``log_ndtr``, ``erfcx``). A training loop of an MLP needs none of them, and importing them all was more than a
quarter of ``import autograd``'s own cost.

Each name works before its module is loaded: ``x.svd()`` and ``autograd.Tensor.svd`` (a stand-in method of
Tensor's, ops/__init__.py), ``autograd.svd`` (autograd's ``__getattr__``) and ``autograd.return_types.svd``
(return_types' ``__getattr__``) import the module the first time one is asked for, and it binds all of its
names as an eager module's are bound. ``dir()`` lists them from the start. tests/test_lazy_imports.py checks that
this table lists what each module declares, no more and no less: a name added to one of these modules goes here
too.
"""

MODULES = {  # module of autograd.ops: {kind: its names, space-separated}
    "fourier": {}, "zeta": {}, "pooling": {}, "convolution": {}, "tie_orders": {}, "hardswish": {},  # (no names)
    "piecewise_linear": {}, "gelu_tanh": {}, "normal_tails": {},
    "lu": {
        "methods": "lu lu_solve",
        "functions": "lu lu_solve lu_unpack",
        "return_types": ("_lu_with_info _lu_with_info_out linalg_lu linalg_lu_factor linalg_lu_factor_ex "
                         "linalg_lu_factor_ex_out linalg_lu_factor_out linalg_lu_out lu_unpack lu_unpack_out"),
    },
    "decompositions": {
        "methods": "cholesky cholesky_inverse cholesky_solve matrix_power qr",
        "functions": "cholesky cholesky_inverse cholesky_solve lobpcg matrix_power qr",
        "return_types": "linalg_eigh linalg_eigh_out linalg_qr linalg_qr_out qr qr_out",
    },
    "svd": {
        "methods": "pinverse svd",
        "functions": "pinverse svd",
        "return_types": "linalg_lstsq linalg_lstsq_out linalg_svd linalg_svd_out svd svd_out",
    },
    "inverses": {
        "methods": "det inverse logdet slogdet",
        "functions": "det inverse logdet slogdet",
        "return_types": "linalg_slogdet linalg_slogdet_out slogdet slogdet_out",
    },
    "householder": {
        "methods": "geqrf orgqr ormqr",
        "functions": "geqrf orgqr ormqr",
        "return_types": "geqrf geqrf_out",
    },
    "triangular": {
        "methods": "triangular_solve",
        "functions": "triangular_solve",
        "return_types": "triangular_solve triangular_solve_out",
    },
    "matrix_exp": {
        "methods": "matrix_exp",
        "functions": "matrix_exp",
    },
    "bessel": {
        "methods": "i0",
        "inplace": "i0_",
        "functions": "i0",
    },
    "incomplete_gamma": {
        "methods": "igamma igammac",
        "inplace": "igamma_ igammac_",
        "functions": "igamma igammac",
    },
    "gamma": {
        "methods": "digamma lgamma mvlgamma polygamma",
        "inplace": "digamma_ lgamma_ mvlgamma_ polygamma_",
        "functions": "digamma lgamma mvlgamma polygamma",
    },
    "standard_gamma": {
        "methods": "_standard_gamma _standard_gamma_grad",
        "functions": "_standard_gamma _standard_gamma_grad",
    },
    "dirichlet_draw": {
        "methods": "_dirichlet_grad",
        "functions": "_dirichlet_grad _sample_dirichlet",
    },
    "dlpack": {
        "methods": "__dlpack__ __dlpack_device__",
        "functions": "from_dlpack to_dlpack",
    },
    "hashing": {
        "methods": "hash_tensor",
        "functions": "hash_tensor",
    },
    "overlapping_view_read": {
        "methods": "_read_overlapping_view",
    },
    "rebased_no_grad_view": {
        "methods": "_rebase_no_grad_view",
    },
    "quantization": {
        "functions": ("_fake_quantize_learnable_per_channel_affine _fake_quantize_learnable_per_tensor_affine "
                      "fake_quantize_per_channel_affine fake_quantize_per_tensor_affine"),
    },
    "short_time_fourier": {
        "methods": "istft stft",
        "functions": "istft stft",
    },
    "scaled_products": {
        "methods": "addbmm addmm addmv addr baddbmm",
        "inplace": "addbmm_ addmm_ addmv_ addr_ baddbmm_",
        "functions": "addbmm addmm addmv addr baddbmm",
    },
    "cumulative": {
        "methods": "cummax cummin cumprod cumsum diff logcumsumexp prod",
        "inplace": "cumprod_ cumsum_",
        "functions": "cummax cummin cumprod cumsum diff logcumsumexp prod",
        "return_types": "cummax cummax_out cummin cummin_out",
    },
    "splitting": {
        "methods": ("chunk dsplit hsplit narrow select split split_with_sizes tensor_split unbind unsafe_chunk "
                    "unsafe_split unsafe_split_with_sizes vsplit"),
        "functions": ("atleast_1d atleast_2d atleast_3d chunk column_stack concat concatenate dsplit dstack hsplit "
                      "hstack narrow row_stack select split split_with_sizes tensor_split unbind unsafe_chunk "
                      "unsafe_split unsafe_split_with_sizes vsplit vstack"),
    },
    "diagonals": {
        "methods": "diag diag_embed diagflat diagonal fill_diagonal_ trace tril triu",
        "inplace": "tril_ triu_",
        "functions": "diag diag_embed diagflat diagonal tril triu",
    },
    "statistics": {
        "methods": "corrcoef cov nanquantile quantile",
        "functions": "corrcoef cov nanquantile quantile std_mean var_mean",
    },
    "regions": {
        "methods": "diagonal_scatter narrow_copy select_scatter slice_scatter",
        "functions": "diagonal_scatter narrow_copy select_scatter slice_scatter",
    },
    "masking": {
        "methods": "argwhere index_fill masked_fill masked_scatter masked_select nonzero nonzero_static sparse_mask",
        "inplace": "index_fill_ masked_fill_ masked_scatter_",
        "functions": "argwhere index_fill masked_fill masked_scatter masked_select nonzero nonzero_static",
    },
    "reshaping_in_place": {
        "methods": ("as_strided_ resize resize_ resize_as resize_as_ set_ squeeze_ swapaxes_ swapdims_ t_ transpose_ "
                    "unsqueeze_"),
    },
    "sorting": {
        "methods": "argsort kthvalue median mode msort nanmedian sort topk unique unique_consecutive",
        "functions": ("argsort bucketize kthvalue median mode msort nanmedian searchsorted sort topk unique "
                      "unique_consecutive"),
        "return_types": ("kthvalue kthvalue_out median median_out mode mode_out nanmedian nanmedian_out sort sort_out "
                         "topk topk_out"),
    },
    "contractions": {
        "methods": "bmm cross dot ger inner kron mm mv outer vdot",
        "functions": "bmm cross dot einsum ger inner kron mm mv outer spmm tensordot vdot",
    },
    "norms": {
        "methods": "dist norm renorm",
        "inplace": "renorm_",
        "functions": "_weight_norm cdist dist frobenius_norm norm norm_except_dim nuclear_norm renorm",
    },
    "half_linalg": {},
    "distances": {
        "functions": "cosine_similarity pairwise_distance pdist",
    },
    "normalization": {
        "functions": "batch_norm batch_norm_update_stats group_norm instance_norm layer_norm rms_norm",
    },
    "numbers": {
        "methods": "erfc frexp gcd lcm ldexp nextafter",
        "inplace": "erfc_ gcd_ lcm_ ldexp_ nextafter_",
        "functions": "erfc frexp gcd lcm ldexp nextafter",
        "return_types": "frexp frexp_out",
    },
    "bilinear": {
        "functions": "bilinear",
    },
    "embedding": {
        "functions": "embedding embedding_renorm_",
    },
    "pixel_shuffle": {
        "functions": "channel_shuffle native_channel_shuffle pixel_shuffle pixel_unshuffle",
    },
    "strided": {
        "methods": "as_strided as_strided_scatter",
        "functions": "as_strided as_strided_scatter slice_inverse",
    },
    "runtime_checks": {
        "functions": ("_assert _assert_async _check _check_index _check_is_size _check_not_implemented "
                      "_check_tensor_all _check_type _check_value"),
    },
    "extrema": {
        "methods": "amax amin aminmax nanmean nansum",
        "functions": "amax amin aminmax nanmean nansum",
        "return_types": "aminmax aminmax_out",
    },
    "indexing": {
        "methods": "gather scatter scatter_add scatter_reduce take_along_dim",
        "inplace": "scatter_ scatter_add_ scatter_reduce_",
        "functions": "gather scatter scatter_add scatter_reduce take_along_dim",
    },
    "index_vectors": {
        "methods": "index_add index_copy index_put index_reduce index_select put take",
        "inplace": "index_add_ index_copy_ index_put_ index_reduce_ put_",
        "functions": "index_add index_copy index_put index_reduce index_select put take",
    },
    "activations": {
        "methods": "hardshrink prelu",
        "functions": "celu celu_ hardshrink prelu rrelu rrelu_ selu selu_ threshold threshold_",
    },
    "arranging": {
        "methods": ("adjoint broadcast_to flip fliplr flipud moveaxis movedim ravel repeat repeat_interleave roll "
                    "rot90 swapaxes swapdims tile unflatten unfold"),
        "functions": ("adjoint broadcast_shapes broadcast_tensors broadcast_to flip fliplr flipud moveaxis movedim "
                      "ravel repeat repeat_interleave roll rot90 swapaxes swapdims tile unflatten unravel_index"),
    },
    "sampling": {
        "methods": "bernoulli multinomial",
        "inplace": "bernoulli_ cauchy_ exponential_ geometric_ log_normal_ normal_ random_ uniform_",
        "functions": "bernoulli binomial multinomial normal poisson",
    },
}


def _by_name(kind):
    """{name: the module that declares it} for one kind of name ("methods", "inplace", ...)."""
    return {name: module for module, kinds in MODULES.items() for name in kinds.get(kind, "").split()}


METHODS, INPLACE, FUNCTIONS, RETURN_TYPES = (_by_name(kind) for kind in ("methods", "inplace", "functions",
                                                                         "return_types"))

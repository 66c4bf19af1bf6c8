"""What a stranger's program may do: pure tensor computation, checked operator by operator.

A TorchScript or torch.export program is a graph of operators. Before it runs, every graph it
can run (all methods and hooks of all submodules, with calls inlined, into every nested block;
for torch.export the graph module and its sub-graphs) is walked and each operator compared
with the allowlist below. An allowlist, not a denylist: a torch release that adds an operator
(one that reads a file, say, as `aten::from_file` does) finds it refused until it is listed
here. Refused programs never run; the message names the file and the first operators found.

The aten operators allowed are arithmetic, comparisons, reductions, shape and indexing
operations, tensor creation from numbers (never from files or storages), random draws,
convolutions, normalisation, pooling and resampling, and a few in-place variants of them.
"""

from __future__ import annotations

import re

# Base names (without overload and without the in-place `_` suffix, which is allowed for every
# name below: add_ is add computed in place).
ATEN_ALLOWED = frozenset("""
abs absolute acos acosh add addbmm addcdiv addcmul addmm addmv addr alias all allclose amax amin aminmax angle
any arange arccos arccosh arcsin arcsinh arctan arctan2 arctanh argmax argmin argsort as_strided asin asinh atan
atan2 atanh atleast_1d atleast_2d atleast_3d baddbmm batch_norm bernoulli binary_cross_entropy bitwise_and
bitwise_not bitwise_or bitwise_xor bmm broadcast_tensors broadcast_to bucketize ceil celu channel_shuffle chunk
clamp clamp_max clamp_min clip clone col2im conj constant_pad_nd contiguous conv1d conv2d conv3d conv_tbc
conv_transpose1d conv_transpose2d conv_transpose3d convolution _convolution copy copysign cos cosh cosine_similarity
count_nonzero cross cummax cummin cumprod cumsum deg2rad detach diag diag_embed diagonal diff digamma dist div
divide dot dropout dsplit dstack einsum elu embedding empty empty_like empty_strided eq equal erf erfc erfinv exp
exp2 expand expand_as expm1 exponential eye feature_alpha_dropout feature_dropout alpha_dropout fill fix flatten
flip fliplr flipud float_power floor floor_divide fmax fmin fmod frac full full_like gather gcd ge gelu geometric
glu greater greater_equal grid_sampler grid_sampler_2d group_norm gru_cell gt hardshrink hardsigmoid hardswish
hardtanh heaviside hsplit hstack hypot i0 im2col index index_add index_copy index_fill index_put index_select
instance_norm isclose isfinite isinf isnan isneginf isposinf isreal kron kthvalue layer_norm lcm ldexp le lerp
less less_equal lgamma linalg_norm linalg_vector_norm linear linspace log log10 log1p log2 log_normal log_softmax
logaddexp logaddexp2 logcumsumexp logical_and logical_not logical_or logical_xor logit logspace logsumexp lstm_cell
lt masked_fill masked_scatter masked_select matmul max max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices maximum mean median meshgrid min minimum mish mm mode moveaxis movedim
mse_loss mul multinomial multiply mv mvlgamma nan_to_num nanmean nanmedian nansum narrow narrow_copy native_batch_norm
native_dropout native_group_norm native_layer_norm ne neg negative new_empty new_full new_ones new_zeros nextafter
nll_loss nonzero norm normal not_equal numel ones ones_like outer pad permute pixel_shuffle pixel_unshuffle
polar pow prelu prod quantile rad2deg rand rand_like randint randint_like randn randn_like random randperm ravel
reciprocal reflection_pad1d reflection_pad2d reflection_pad3d relu relu6 remainder renorm repeat repeat_interleave
replication_pad1d replication_pad2d replication_pad3d reshape reshape_as resolve_conj resolve_neg rms_norm rnn_relu_cell
rnn_tanh_cell roll rot90 round rrelu rsqrt rsub scalar_tensor scaled_dot_product_attention scatter scatter_add
scatter_reduce searchsorted select select_scatter selu sgn sigmoid sign signbit silu sin sinc sinh size slice
slice_scatter smooth_l1_loss softmax softplus softshrink sort split split_with_sizes sqrt square squeeze stack std
std_mean sub subtract sum swapaxes swapdims t take take_along_dim tan tanh tensor tensor_split tensordot threshold
tile to topk trace transpose trapz tril triu true_divide trunc type_as unbind unflatten uniform unique_consecutive
unsafe_chunk unsafe_split unsqueeze upsample_bicubic2d upsample_bilinear2d upsample_linear1d upsample_nearest1d
upsample_nearest2d upsample_nearest3d upsample_trilinear3d var var_mean vdot view view_as vsplit vstack where xlogy
zero zeros zeros_like adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d
adaptive_max_pool2d adaptive_max_pool3d avg_pool1d avg_pool2d avg_pool3d interpolate _upsample_bilinear2d_aa
_upsample_bicubic2d_aa _unsafe_view _to_copy _reshape_alias lift_fresh lift_fresh_copy _log_softmax _softmax
_native_batch_norm_legit _native_batch_norm_legit_no_training _native_batch_norm_legit_functional
_unsafe_index _unsafe_index_put expand_copy permute_copy view_copy squeeze_copy unsqueeze_copy transpose_copy
t_copy alias_copy clone_ fill_ zero_ sym_size sym_numel sym_stride sym_storage_offset stride dim __and__ __or__
__xor__ __not__ __lshift__ __rshift__ __getitem__ __contains__ __is__ __isnot__ __round_to_zero_floordiv
Int Float Bool Complex ScalarImplicit IntImplicit FloatImplicit str format len list append extend insert pop
remove clear reverse keys values items get __derive_index __range_length floordiv mul div add sub neg max min
item dtype device is_floating_point is_contiguous requires_grad_ layout warn manual_seed _assert_async
_assert_scalar _assert_tensor_metadata sym_constrain_range sym_constrain_range_for_size _functional_sym_constrain_range
empty_permuted full_like alias copy_ _local_scalar_dense to_dense sqrt_ cat concat concatenate leaky_relu
gru lstm rnn_tanh rnn_relu _native_multi_head_attention is_autocast_enabled is_grad_enabled
_has_compatible_shallow_copy_type native_channel_shuffle _addmm_activation _transformer_encoder_layer_fwd
_scaled_dot_product_attention_math _scaled_dot_product_flash_attention_for_cpu _safe_softmax softmax_backward_data
pixel_unshuffle cdist pdist _cdist_forward cartesian_prod combinations histc bincount argwhere det logdet slogdet
inverse pinverse cholesky qr svd eig matrix_power matrix_exp frobenius_norm nuclear_norm kl_div cross_entropy
binary_cross_entropy_with_logits l1_loss huber_loss triplet_margin_loss cosine_embedding_loss margin_ranking_loss
poisson_nll_loss
""".split())
# resampling of any kind and dimension (upsample_bilinear2d, _upsample_nearest_exact3d, ...)
_UPSAMPLE = re.compile(r"^(_?upsample_[a-z0-9_]+|linalg_[a-z0-9_]+|special_[a-z0-9_]+|fft_[a-z0-9_]+)$")

# TorchScript's own instructions: control flow, constants, containers, attribute access. Each
# is a step of the interpreter, none touches the outside world. (prim::PythonOp, which calls
# back into Python, and prim::CallFunction left after inlining are not here.)
PRIM_ALLOWED = frozenset("""
Constant ListConstruct ListUnpack TupleConstruct TupleUnpack TupleIndex TupleSlice DictConstruct DictIndex
GetAttr SetAttr If Loop NumToTensor ImplicitTensorToNum device dtype layout shape is_cuda is_cpu is_xpu is_mps
is_meta is_quantized is_sparse requires_grad data unchecked_cast Uninitialized RaiseException min max abs
isinstance Print Enter Exit CallMethod EnumValue EnumName tolist type StringIndex AutogradZero is_nested
AutogradAdd profile profile_ivalue BailOut Guard TypeCheck Return Param
""".split())

OTHER_ALLOWED = frozenset({"aten", "prim"})  # namespaces; anything else (custom ops, quantized, ...) is refused
_KIND = re.compile(r"^(?P<ns>[A-Za-z_][A-Za-z0-9_]*)::(?P<name>[A-Za-z0-9_]+)$")


def operator_allowed(kind: str) -> bool:
    """True for a TorchScript node kind (`aten::conv2d`, `prim::If`) on the allowlist."""
    m = _KIND.match(kind)
    if m is None:
        return False
    ns, name = m["ns"], m["name"]
    if ns == "prim":
        return name in PRIM_ALLOWED
    if ns == "aten":
        if name in ATEN_ALLOWED or _UPSAMPLE.match(name):
            return True
        return name.endswith("_") and not name.startswith("_") and name[:-1] in ATEN_ALLOWED
    return False


def script_operators(module) -> dict[str, str]:
    """Every operator a TorchScript module can run: kind -> where it was first seen."""
    import torch

    found: dict[str, str] = {}

    def walk(block, where: str) -> None:
        for node in block.nodes():
            found.setdefault(node.kind(), where)
            for sub in node.blocks():
                walk(sub, where)

    for name, sub in module.named_modules():
        c = sub._c
        label = name or "<top>"
        for method in c._method_names():
            graph = c._get_method(method).graph.copy()
            torch._C._jit_pass_inline(graph)
            walk(graph, f"{label}.{method}")
        hooks = list(c._get_forward_pre_hooks()) + list(c._get_forward_hooks())
        for i, hook in enumerate(hooks):
            graph = hook.graph.copy()
            torch._C._jit_pass_inline(graph)
            walk(graph, f"{label} hook {i}")
    return found


def export_operators(exported) -> dict[str, str]:
    """Every operator a torch.export program can run: 'namespace::name' -> the graph it is in,
    sub-graphs of higher-order operators (cond, while_loop, ...) included."""
    found: dict[str, str] = {}
    gm = exported.graph_module
    for mod_name, module in gm.named_modules():
        graph = getattr(module, "graph", None)
        if graph is None:
            continue
        for node in graph.nodes:
            if node.op == "call_function":
                target = node.target
                name = getattr(target, "name", None)
                qual = name() if callable(name) else None
                if qual is None:
                    # operator.getitem and friends are Python built-ins used as graph plumbing
                    module_name = getattr(target, "__module__", "") or ""
                    if module_name in ("_operator", "operator") and getattr(target, "__name__", "") in (
                            "getitem", "add", "sub", "mul", "floordiv", "truediv", "neg", "eq", "ne", "lt", "le",
                            "gt", "ge", "and_", "or_", "not_"):
                        continue
                    qual = (f"python::{getattr(target, '__module__', '?')}."
                            f"{getattr(target, '__qualname__', str(target))}")
                elif "::" in qual:
                    qual = qual.split(".")[0]  # drop the overload ('aten::conv2d.default' -> 'aten::conv2d')
                found.setdefault(qual, mod_name or "<graph>")
            elif node.op == "call_method" or node.op == "call_module":
                found.setdefault(f"fx::{node.op}:{node.target}", mod_name or "<graph>")
    return found


def refused_operators(found: dict[str, str]) -> list[str]:
    return sorted(k for k in found if not operator_allowed(k))

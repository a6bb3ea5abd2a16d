"""``torch.fx.Tracer`` and ``symbolic_trace``: a module's ``forward`` (or a function) run once on proxies, recording
the graph of what it does.

The inputs are ``placeholder`` proxies; while the program runs, an entered ``TorchFunctionMode`` hands every library
function called with a proxy (or with one of the root's parameters or buffers, which PyTorch's tracer reads as
``get_attr`` nodes) to ``Proxy.__torch_function__``, and ``nn.Module.__call__`` is patched so that a leaf module (nn's
own layers, ``is_leaf_module``) becomes one ``call_module`` node instead of being traced through. Functions marked
with ``wrap`` are patched in the globals that named them, to become one ``call_function`` node each."""

import builtins
import collections
import copy
import functools
import importlib
import inspect
import math
import operator
import sys
import types
import warnings

from .. import dispatching
from ..function_modes import TorchFunctionMode
from ..tensor import Tensor
from .graph import Graph
from .proxy import Proxy, TraceError, arguments_hold_proxies

# (id of globals, name) → the globals, of the functions fx.wrap marked: patched while a trace runs (once each,
# however often a GraphModule's code marks its own again)
_WRAPPED = {}


def wrap(fn_or_name):
    """``@torch.fx.wrap`` or ``torch.fx.wrap("len")`` at a module's top level: calls of that name from the module's
    code become one ``call_function`` node when traced, the function not traced through. The function (or name)
    comes back as it is. (PyTorch refuses a call below a module's top level; chainrule keeps the mark there, where
    libraries such as timm make it inside functions.)"""
    name = fn_or_name if isinstance(fn_or_name, str) else fn_or_name.__name__
    caller = sys._getframe(1)
    _WRAPPED[id(caller.f_globals), name] = caller.f_globals
    return fn_or_name


def _assert_is_none(value, message):
    assert value is None, message


class _Recording(TorchFunctionMode):
    """While a trace runs: a call holding a proxy is recorded as a node (one holding none runs: its result is a
    constant of the graph). The node's target is the function itself, not the dispatching wrapper entering the mode
    installed (``node.target is torch.relu`` holds); the wrappers are taken off again at the end where this mode put
    them on, so that a program that traced once does not pay for them on every call of its training."""

    def __init__(self, tracer, installed_before):
        super().__init__()
        self.tracer, self.installed_before = tracer, installed_before

    def __exit__(self, *exc_info):
        super().__exit__(*exc_info)
        if not self.installed_before and not dispatching._dispatch.mode_stack:
            dispatching.uninstall()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if arguments_hold_proxies((args, kwargs)):
            if isinstance(func, dispatching.Dispatching) and not func.tensor_method:
                func = func.__wrapped__
            return Proxy.__torch_function__(func, types, args, kwargs)
        return func(*args, **kwargs)


class Tracer:
    """Records a program's graph (``trace``). Subclasses change what is a leaf (``is_leaf_module``), how a module
    call is recorded (``call_module``) or how a value becomes a node's argument (``create_arg``)."""

    def __init__(self, autowrap_modules=(math,), autowrap_functions=(), param_shapes_constant=False):
        # the functions recorded whole where a traced function's globals (or those modules) hold them: every public
        # function of ``autowrap_modules`` (math's: ``math.sqrt(x.shape[0])``), and ``autowrap_functions``
        self.autowrap_modules, self.autowrap_functions = tuple(autowrap_modules), tuple(autowrap_functions)
        self._autowrap_function_ids = {id(value) for module in self.autowrap_modules
                                       for name, value in vars(module).items()
                                       if not name.startswith("_") and callable(value)}
        self._autowrap_function_ids.update(id(function) for function in self.autowrap_functions)
        # the modules whose forward is running, innermost last: path (``path@n`` for its n-th call again) →
        # (path, class), copied into each node's meta["nn_module_stack"], as PyTorch's
        self.module_stack, self.num_calls = collections.OrderedDict(), {}
        self.graph = None
        self.root = None
        # id of each parameter and buffer of the root → its path; of each constant tensor → the attribute holding
        # it; each such path → its get_attr node (one per attribute)
        self._attribute_paths, self._constant_paths, self._attribute_nodes = {}, {}, {}

    # -- the nodes ---------------------------------------------------------------------------------------------------

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = self.graph.create_node(kind, target, args, kwargs, name, type_expr)
        if self.module_stack:
            node.meta["nn_module_stack"] = copy.copy(self.module_stack)
        return node

    def proxy(self, node):
        return Proxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        node = self.create_node(kind, target, self.create_arg(args), self.create_arg(kwargs), name, type_expr)
        return self.proxy(node) if proxy_factory_fn is None else proxy_factory_fn(node)

    def create_arg(self, a):
        """``a`` as a node's argument: proxies as their nodes, the root's parameters and buffers as ``get_attr``
        nodes, other tensors as constants the root holds (``_tensor_constant0``), containers item by item."""
        if isinstance(a, Proxy):
            return a.node
        if isinstance(a, Tensor):
            path = self._attribute_paths.get(id(a)) or self._constant_paths.get(id(a))
            if path is None:
                path = self._new_constant(a)
            if path not in self._attribute_nodes:  # (one node per attribute, however often it is read)
                self._attribute_nodes[path] = self.create_node("get_attr", path, (), {})
            return self._attribute_nodes[path]
        if isinstance(a, tuple):
            items = [self.create_arg(item) for item in a]
            make = getattr(type(a), "_make", None)
            return make(items) if make is not None else tuple(items)
        if isinstance(a, list):
            return [self.create_arg(item) for item in a]
        if isinstance(a, dict):
            return {key: self.create_arg(item) for key, item in a.items()}
        if isinstance(a, slice):
            return slice(self.create_arg(a.start), self.create_arg(a.stop), self.create_arg(a.step))
        if isinstance(a, _nn().Module):  # (a submodule handed to a wrapped function: read as an attribute)
            path = self._module_paths.get(id(a))
            if path is None:
                raise NameError(f"module {type(a).__name__} is not installed as a submodule of the traced root")
            if path not in self._attribute_nodes:
                self._attribute_nodes[path] = self.create_node("get_attr", path, (), {})
            return self._attribute_nodes[path]
        return a

    def _new_constant(self, tensor):
        index = 0
        while hasattr(self.root, f"_tensor_constant{index}"):
            index += 1
        name = f"_tensor_constant{index}"
        setattr(self.root, name, tensor)
        self._constant_paths[id(tensor)] = name
        return name

    def to_bool(self, obj):
        raise TraceError("symbolically traced variables cannot be used as inputs to control flow")

    def iter(self, obj):
        raise TraceError("Proxy object cannot be iterated. This can be attempted when the Proxy is used in a loop "
                         "or as a *args or **kwargs function argument. See the torch.fx docs on pytorch.org for a "
                         "more detailed explanation of what types of control flow can be traced, and check out the "
                         "Proxy docstring for help troubleshooting Proxy iteration errors")

    def keys(self, obj):
        return self.create_proxy("call_method", "keys", (obj,), {})

    # -- modules -----------------------------------------------------------------------------------------------------

    def is_leaf_module(self, m, module_qualified_name):
        """nn's own layers are leaves (one ``call_module`` node), but containers (``nn.Sequential``), which are
        traced through; a program's modules are traced through."""
        nn = _nn()
        return type(m).__module__.partition(".")[0] == "nn" and not isinstance(m, nn.Sequential)

    def path_of_module(self, mod):
        path = self._module_paths.get(id(mod))
        if path is None:
            raise NameError("module is not installed as a submodule")
        return path

    def call_module(self, m, forward, args, kwargs):
        """A leaf module as one ``call_module`` node; any other run through (its forward recorded node by node)."""
        module_qualified_name = self.path_of_module(m)
        calls = self.num_calls.get(module_qualified_name, 0)
        key = f"{module_qualified_name}@{calls}" if calls else module_qualified_name
        self.module_stack[key] = (module_qualified_name, type(m))
        self.num_calls[module_qualified_name] = calls + 1
        try:
            if not self.is_leaf_module(m, module_qualified_name):
                return forward(*args, **kwargs)
            return self.create_proxy("call_module", module_qualified_name, args, kwargs)
        finally:
            self.module_stack.pop(key)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val

    # -- the trace ---------------------------------------------------------------------------------------------------

    def trace(self, root, concrete_args=None):
        """The graph of ``root``'s forward (or of the function ``root``), its inputs proxies but for those
        ``concrete_args`` fixes (a value then checked by an ``_assert`` node, as PyTorch's)."""
        nn = _nn()
        if isinstance(root, nn.Module):
            self.root, fn = root, type(root).forward
        else:
            self.root, fn = nn.Module(), root
        self.graph = Graph(tracer_cls=type(self))
        installed_before = dispatching._installed  # (before the placeholders' proxies install the wrappers)
        self._module_paths = {id(module): name for name, module in self.root.named_modules(remove_duplicate=False)}
        self._attribute_paths = {id(tensor): name for name, tensor in (
            *self.root.named_parameters(remove_duplicate=False), *self.root.named_buffers(remove_duplicate=False))}
        self._constant_paths, self._attribute_nodes = {}, {}
        self.module_stack, self.num_calls = collections.OrderedDict(), {}
        fn, args = self._placeholders(fn, isinstance(root, nn.Module), concrete_args or {})
        tracer = self
        original_call = nn.Module.__call__

        @functools.wraps(original_call)
        def module_call(mod, *args, **kwargs):
            return tracer.call_module(mod, lambda *a, **k: original_call(mod, *a, **k), args, kwargs)

        parameters = {id(parameter) for parameter in self.root.parameters()}
        original_getattribute = vars(nn.Module).get("__getattribute__", _MISSING)
        read = object.__getattribute__ if original_getattribute is _MISSING else original_getattribute

        def module_getattribute(mod, name):
            # a parameter of the root read in a forward is a proxy of its get_attr node, as PyTorch's tracer gives
            # (``self.scale * 2`` is then operator.mul of that node); a buffer or any other attribute as it is (a
            # buffer becomes a get_attr node where a recorded call takes it, as PyTorch's by default)
            value = read(mod, name)
            if isinstance(value, Tensor) and id(value) in parameters:
                return tracer.proxy(tracer.create_arg(value))
            return value

        patched = [(globals_, name, globals_.get(name, _MISSING)) for (_, name), globals_ in _WRAPPED.items()]
        for globals_ in [getattr(fn, "__globals__", {})] + [vars(module) for module in self.autowrap_modules]:
            patched += [(globals_, name, value) for name, value in list(globals_.items())
                        if not name.startswith("_") and callable(value) and id(value) in self._autowrap_function_ids]
        try:
            nn.Module.__call__ = module_call
            nn.Module.__getattribute__ = module_getattribute
            for globals_, name, held in patched:
                function = held if held is not _MISSING else getattr(builtins, name, None)
                if function is not None:
                    globals_[name] = self._recorded_whole(function)
            with _Recording(self, installed_before):
                result = fn(*args)
        finally:
            nn.Module.__call__ = original_call
            if original_getattribute is _MISSING:
                del nn.Module.__getattribute__
            else:
                nn.Module.__getattribute__ = original_getattribute
            for globals_, name, held in reversed(patched):
                if held is _MISSING:
                    globals_.pop(name, None)
                else:
                    globals_[name] = held
        self.create_node("output", "output", (self.create_arg(result),), {})
        return self.graph

    def _recorded_whole(self, function):
        """``function`` as ``wrap`` makes it while tracing: one node where its arguments hold a proxy."""
        @functools.wraps(function)
        def recorded(*args, **kwargs):
            if arguments_hold_proxies((args, kwargs)):
                proxy = self.create_proxy("call_function", function, args, kwargs)
                proxy.node.meta["is_wrapped"] = True  # (the code written marks it again: a retrace keeps it whole)
                return proxy
            return function(*args, **kwargs)
        return recorded

    def _placeholders(self, fn, is_method, concrete_args):
        """``fn`` as it is traced (one taking ``*args`` or ``**kwargs`` made to take them as one positional value
        each, as PyTorch's tracer does: a proxy is not unpacked) and the values it is called with: the root, then
        one placeholder per parameter in the code's order (positional, keyword-only, ``*args``, ``**kwargs``;
        targets ``*args`` and ``**kwargs``)."""
        parameters = dict(inspect.signature(fn).parameters)
        code = fn.__code__ if hasattr(fn, "__code__") else None
        star = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
        if any(parameter.kind in star for parameter in parameters.values()):
            fn = _taking_variadics_as_values(fn, len(parameters))
            parameters = {name: parameters[name] for name in code.co_varnames[:len(parameters)]}
        parameters = list(parameters.values())
        if is_method and (not parameters or parameters[0].kind in star):
            raise RuntimeError("``self`` argument cannot be part of *args expansion!")
        args = [self.root] if is_method else []
        for parameter in parameters[1:] if is_method else parameters:
            default = () if parameter.default is inspect.Parameter.empty else (parameter.default,)
            if parameter.name in concrete_args:
                args.append(self._concrete(parameter.name, concrete_args[parameter.name], default))
            else:
                target = star.get(parameter.kind, "") + parameter.name
                args.append(self.create_proxy("placeholder", target, default, {}))
        return fn, args

    def _concrete(self, name, value, default):
        """The input ``name`` fixed at ``value``: still a placeholder (``name_1``), whose value is asserted."""
        placeholder = self.create_proxy("placeholder", f"{name}_1", default, {})
        if type(value) in (bool, int, float, str):
            import autograd

            equal = self.create_proxy("call_function", operator.eq, (placeholder, value), {})
            self.create_proxy("call_function", autograd._assert,
                              (equal, f"{name} has been specialized to have value {value} but got another value"), {})
        elif value is None:
            self.create_proxy("call_function", _assert_is_none,
                              (placeholder, f"{name} has been specialized to have value None but got another value"),
                              {})
        else:
            warnings.warn(f"Was not able to add assertion to guarantee correct input {name} to specialized "
                          "function. It is up to the user to make sure that your inputs match the inputs you "
                          "specialized the function with.", stacklevel=3)
        return value


_MISSING = object()


def _taking_variadics_as_values(fn, count):
    """``fn`` whose ``*args`` and ``**kwargs`` (and keyword-only parameters) are plain positional parameters: its
    code with the variadic flags cleared and all ``count`` parameters counted positional."""
    code = fn.__code__
    flags = code.co_flags & ~(inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
    patched = code.replace(co_flags=flags, co_argcount=count, co_kwonlyargcount=0, co_posonlyargcount=0)
    return types.FunctionType(patched, fn.__globals__, fn.__name__, None, fn.__closure__)


class GraphAppendingTracer(Tracer):
    """The tracer of a proxy made by hand (``fx.Proxy(node)``, a Transformer's): it appends to that node's graph."""

    def __init__(self, graph):
        super().__init__()
        self.graph = graph


def _nn():
    return importlib.import_module("nn")  # (nn is built on autograd: loaded by the program that traces it)


def symbolic_trace(root, concrete_args=None):
    """``torch.fx.symbolic_trace``: ``root`` (a module or a function) traced into a ``GraphModule``."""
    from .graph_module import GraphModule

    tracer = Tracer()
    graph = tracer.trace(root, concrete_args)
    name = type(root).__name__ if isinstance(root, _nn().Module) else root.__name__
    return GraphModule(tracer.root, graph, name)

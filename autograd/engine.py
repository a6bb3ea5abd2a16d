"""The backward pass: topological order, then the chain rule node by node.

One engine serves both the scalar ``Value`` and the ``Tensor``. A graph node
offers four things:

    node.parents        the nodes it was computed from (None where no gradient flows)
    node.receive(g)     g = dL/dnode, complete; run its hooks and store it (.grad);
                        returns the gradient to pass on
    node.run_hooks(g)   only the hooks (``autograd.grad`` stores nothing)
    node.chain(g)       the chain rule: dL/dparent_i = dL/dnode · dnode/dparent_i, one per parent
    node.post_hooks     None, or hooks run on (dL/dparent_i..., (dL/dnode,)) by node.run_post_hooks
    node.release()      free what was saved for backward
    node.frees          whether release() has anything to do (the engine calls it only then)

Backpropagation visits every node once, after every node that used it, so
the gradient it passes on is already the sum of all its consumers' shares.
"""

import gc
import sys

from .backend import errstate
from .graph import add_share, modes, program_stacklevel, refuse_nan_gradients, run_hooks


def edges(node):
    """The nodes ``node`` was computed from, also once its graph was freed: PyTorch keeps a freed node's
    edges (only its saved tensors go), so a later pass walks through it, and ``autograd.grad`` of an input
    that does not lie below it runs; only running the freed node's backward raises (its ``chain``)."""
    try:
        return iter(node.parents)
    except RuntimeError:  # the FreedGraph release() left: the parents it had
        return iter(node.released_parents)


def topological_order(roots):
    """Nodes reachable from ``roots``, each one before every node it was computed from.

    That is the order the chain rule needs: a node's gradient is complete once all its
    consumers have sent their share. One iterative depth-first walk (a chain of a
    million nodes is fine): a node is emitted once all its parents have been, and the
    reversed emission order puts every consumer before what it consumed.
    """
    order = []
    visited = set()
    for root in roots:
        if root in visited:
            continue
        visited.add(root)
        # the walk's stack as two lists, the nodes and their parents still to visit (no pair made per node)
        nodes, below_each = [root], [edges(root)]
        while below_each:
            for parent in below_each[-1]:
                if parent is not None and parent not in visited:
                    visited.add(parent)
                    below = parent.parents
                    if below:  # (a freed node's FreedGraph is truthy too)
                        try:  # (edges(parent), written out: this runs for every node of every pass)
                            below = iter(below)
                        except RuntimeError:
                            below = iter(parent.released_parents)
                        nodes.append(parent)
                        below_each.append(below)
                        break
                    order.append(parent)  # a leaf: nothing below it, emitted at once (most parents are)
            else:
                below_each.pop()
                order.append(nodes.pop())
    order.reverse()
    return order


def _leading_to(order, targets):
    """The nodes of ``order`` from which some target can be reached (the rest need no work)."""
    needed = set()
    for node in reversed(order):  # parents before consumers
        if node in targets or any(parent in needed for parent in edges(node) if parent is not None):
            needed.add(node)
    return needed


class BackwardPass:
    """The backward pass running in a thread, as hooks may ask about it (PyTorch's graph task):
    ``will_run(node)`` says whether the pass visits ``node`` (a grad_fn, or a leaf tensor). Held in
    ``modes.backward_pass`` while the pass runs, once some hook has asked for it (``watch_passes``:
    ``autograd.graph.register_multi_grad_hook``); until then no pass pays for it."""

    __slots__ = ("order", "_nodes", "__weakref__")
    watched = False  # whether any hook asks (set once, by watch_passes)

    def __init__(self, order):
        self.order, self._nodes = order, None

    def will_run(self, node):
        if self._nodes is None:
            self._nodes = set(self.order)  # (built only when a hook asks)
        return node in self._nodes


def watch_passes():
    """From now on each backward pass is held in ``modes.backward_pass`` while it runs."""
    BackwardPass.watched = True


def queue_callback(callback):
    """Run ``callback()`` when the backward pass running in this thread ends (a nested pass's own end, for a
    callback queued inside it), as PyTorch's ``Variable._execution_engine.queue_callback``."""
    if modes.final_callbacks is None:
        raise RuntimeError("Final callbacks can only be installed during backward pass.")
    modes.final_callbacks.append(callback)


def current_backward_pass():
    """The backward pass running in this thread (None outside one, or before ``watch_passes``)."""
    return modes.backward_pass


def _capture_at(node, grad):
    """``autograd.grad``'s result at a node it was asked for, as PyTorch's: taken after the tensor's hooks
    and retain_grad, before the node's own pre-hooks (``Node.register_prehook``), which run only if the pass
    goes on through the node. Returns (the result, those pre-hooks still to run, or None)."""
    pre_hooks = getattr(node, "pre_hooks", None)  # (a leaf has none here: its AccumulateGrad does not run)
    if not pre_hooks:
        return node.run_hooks(grad), None
    node.pre_hooks = None  # (run_hooks ends with them: held back for this one call)
    try:
        return node.run_hooks(grad), pre_hooks
    finally:
        node.pre_hooks = pre_hooks


def _warn_where(error):
    """Anomaly mode's note on an error raised during a pass, as PyTorch's: a warning naming the node whose backward
    raised it and where its op was created, then one per node whose backward made that op (a second backward's
    op was made by a first backward), up to the program's forward call. A warnings filter that makes them errors
    does not hide the pass's own error: they are printed to stderr instead. (The node is read from the pass's
    frame in the traceback: the loop keeps no record of it, which would cost every node of every pass.)"""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code is not _backpropagate.__code__:
        tb = tb.tb_next
    node = None if tb is None else tb.tb_frame.f_locals.get("node")
    if node is None or not hasattr(node, "name"):
        return
    _warn_or_print(f"Error detected in {node.name()}. " + _forward_trace(node, "caused the error"))
    parent = getattr(node, "anomaly_parent", None)
    while parent is not None:
        _warn_or_print(f"\n\nPrevious calculation was induced by {parent.name()}. "
                       + _forward_trace(parent, "induced the previous calculation"))
        parent = getattr(parent, "anomaly_parent", None)


def _forward_trace(node, what):
    where = getattr(node, "where", None)
    if where is None:
        return "No forward pass information available. Enable detect anomaly during forward pass for more information."
    return f"Traceback of forward call that {what}:\n{where}"


def _warn_or_print(message):
    import warnings  # (anomaly mode only)

    try:
        warnings.warn(message, stacklevel=program_stacklevel())
    except Warning as as_error:  # (a filter made it an error: PyTorch prints what it would have warned)
        print(f"{type(as_error).__name__}: {as_error}", file=sys.stderr)


def backpropagate(roots, root_grads, retain_graph=False, capture=None, on_step=None, prune=False,
                  create_graph=False):
    """Send dL/dnode from the roots to every node below them.

    roots, root_grads: the nodes to start from and dL/droot for each.
    retain_graph:      keep what nodes saved, so a second pass is possible.
    capture:           a set of nodes whose total gradient is returned (for
                       ``autograd.grad``) instead of stored with ``receive``; only
                       nodes on a path to them are visited.
    prune:             with ``capture``, also skip gradients of inputs off those paths
                       inside each node (not when the result must itself be differentiable).
    on_step:           called as on_step(node, grad, parent_grads) after each
                       node, in the order the chain rule is applied (the trace).
    create_graph:      record the pass's own operations (grad mode stays on), so the
                       gradients have a graph of their own.
    Returns {node: dL/dnode} for the captured nodes.
    """
    collecting = gc.isenabled()
    gc.disable()  # the pass allocates much and frees nothing cyclic: a collection would only rescan the graph
    recording, subclasses_asked, outer_outside = modes.grad_enabled, modes.torch_function, \
        modes.torch_function_outside_pass
    modes.grad_enabled = create_graph  # (this thread's mode: see autograd.graph)
    modes.torch_function = False  # (the pass's ops are the engine's: no subclass is asked about them, as PyTorch's)
    modes.torch_function_outside_pass = subclasses_asked  # (the program's code it calls: graph.as_program_code)
    watched = BackwardPass.watched
    outer_pass = modes.backward_pass if watched else None  # (a hook may run a pass of its own)
    outer_callbacks, modes.final_callbacks = modes.final_callbacks, []
    try:
        captured = _backpropagate(roots, root_grads, retain_graph, capture, on_step, prune, watched)
        callbacks = modes.final_callbacks
        while callbacks:  # (a callback may queue another: it runs too, as PyTorch's)
            callbacks.pop(0)()
        return captured
    except Exception as error:
        if modes.anomaly:
            _warn_where(error)
        raise
    finally:
        modes.grad_enabled, modes.torch_function = recording, subclasses_asked
        modes.torch_function_outside_pass = outer_outside
        modes.final_callbacks = outer_callbacks
        if watched:
            modes.backward_pass = outer_pass
        if collecting:
            gc.enable()


def _backpropagate(roots, root_grads, retain_graph, capture, on_step, prune, watched):
    order = topological_order(roots)
    needed = None
    if capture is not None:
        needed = _leading_to(order, capture)
        order = [node for node in order if node in needed]
    anomaly = modes.anomaly  # (read once: anomaly mode during the pass has each node's gradients checked)
    if watched:
        modes.backward_pass = BackwardPass(order)
    pending = {}
    sums = set()  # the sums this pass made itself: nobody else holds them, so later shares go in in place
    for root, grad in zip(roots, root_grads):
        pending[root] = add_share(pending[root], grad, sums) if root in pending else grad
    captured = {}
    for node in order:
        grad = pending.pop(node, None)
        if grad is None:
            continue  # no gradient reaches this node
        if grad in sums:  # (a membership test, not a discard call per node: most gradients are no sum of ours)
            sums.remove(grad)  # complete, and handed on from here: no longer ours to add into
        if capture is None:
            grad = node.receive(grad)
        elif node in capture:
            captured[node], held_back = _capture_at(node, grad)
            grad = captured[node]
            if held_back is not None and any(parent in needed for parent in edges(node)):
                grad = run_hooks(held_back, grad)  # the pass goes on through the node: its pre-hooks run
        else:
            grad = node.run_hooks(grad)
        parents = node.parents
        if needed is not None and parents and not any(parent in needed for parent in edges(node)):
            parents = ()  # captured, and nothing wanted below it: not run, what it saved kept
        if parents:  # (a leaf has none: nothing to pass on, nothing saved to free)
            wanted = [parent in needed for parent in parents] if prune and capture is not None else None
            if anomaly:  # the ops its backward makes (create_graph=True) remember it as their parent
                outer_parent, modes.anomaly_parent = modes.anomaly_parent, node
            try:
                parent_grads = node.chain(grad) if wanted is None else node.chain(grad, wanted)
            except (RuntimeWarning, FloatingPointError):  # a warnings filter made NumPy's "divide by zero" an
                with errstate(all="ignore"):  # error: computed again without it (backend.py)
                    parent_grads = node.chain(grad) if wanted is None else node.chain(grad, wanted)
            finally:
                if anomaly:
                    modes.anomaly_parent = outer_parent
            if node.post_hooks is not None:  # the node's own hooks (Node.register_hook)
                parent_grads = node.run_post_hooks(parent_grads, grad)
            if anomaly:
                refuse_nan_gradients(node, parent_grads)
            for parent, parent_grad in zip(parents, parent_grads):
                if parent is None or parent_grad is None or (needed is not None and parent not in needed):
                    continue
                if parent in pending:  # a reused node: sum the shares
                    pending[parent] = add_share(pending[parent], parent_grad, sums)
                else:
                    pending[parent] = parent_grad
        else:
            parent_grads = ()
        if on_step is not None:
            on_step(node, grad, parent_grads)  # (before the node frees what it saved: the trace reads it)
        if parents and not retain_graph and node.frees:
            node.release()
    return captured

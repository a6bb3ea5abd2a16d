"""The backward pass: topological order, then the chain rule node by node.

One engine serves both the scalar ``Value`` and the ``Tensor``. A graph node
offers four things:

    node.parents        the nodes it was computed from (None where no gradient flows)
    node.receive(g)     g = dL/dnode, complete; store it (.grad) or hand it to hooks;
                        returns the gradient to pass on
    node.chain(g)       the chain rule: dL/dparent_i = dL/dnode · dnode/dparent_i, one per parent
    node.release()      free what was saved for backward

Backpropagation visits every node once, after every node that used it, so
the gradient it passes on is already the sum of all its consumers' shares.
"""


def topological_order(roots):
    """Nodes reachable from ``roots``, each one after every node that uses it.

    That is the order the chain rule needs: a node's gradient is complete once
    all its consumers have sent their share. Two passes, no recursion (a chain
    of a million nodes is fine):
      1. walk the graph and count, for every node, how many consumers it has;
      2. emit a node once all its consumers have been emitted (Kahn's algorithm).
    """
    consumers = {}
    visited = set(roots)
    stack = list(visited)
    while stack:
        for parent in stack.pop().parents:
            if parent is None:
                continue
            consumers[parent] = consumers.get(parent, 0) + 1
            if parent not in visited:
                visited.add(parent)
                stack.append(parent)
    order = []
    ready = [root for root in visited if root not in consumers and root in roots]
    while ready:
        node = ready.pop()
        order.append(node)
        for parent in node.parents:
            if parent is not None:
                consumers[parent] -= 1
                if consumers[parent] == 0:
                    ready.append(parent)
    return order


def backpropagate(roots, root_grads, retain_graph=False, capture=None, on_step=None):
    """Send dL/dnode from the roots to every node below them.

    roots, root_grads: the nodes to start from and dL/droot for each.
    retain_graph:      keep what nodes saved, so a second pass is possible.
    capture:           a set of nodes whose total gradient is returned (for
                       ``autograd.grad``) instead of stored with ``receive``.
    on_step:           called as on_step(node, grad, parent_grads) after each
                       node, in the order the chain rule is applied (the trace).
    Returns {node: dL/dnode} for the captured nodes.
    """
    order = topological_order(roots)
    pending = {}
    for root, grad in zip(roots, root_grads):
        pending[root] = pending[root] + grad if root in pending else grad
    captured = {}
    for node in order:
        grad = pending.pop(node, None)
        if grad is None:
            continue  # no gradient reaches this node
        if capture is None:
            grad = node.receive(grad)
        elif node in capture:
            captured[node] = grad
        parent_grads = node.chain(grad)
        for parent, parent_grad in zip(node.parents, parent_grads):
            if parent is None or parent_grad is None:
                continue
            if parent in pending:
                pending[parent] = pending[parent] + parent_grad  # a reused node: sum the shares
            else:
                pending[parent] = parent_grad
        if on_step is not None:
            on_step(node, grad, parent_grads)
        if not retain_graph:
            node.release()
    return captured

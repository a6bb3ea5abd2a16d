"""Which of several equal elements PyTorch's CPU selection kernels name: the order their algorithms leave
a slice in, replayed on a Python list of (value, index) pairs.

Selecting by value leaves equal values' order to the algorithm: PyTorch's ``sort`` (stable=False) runs
libstdc++'s ``std::sort`` on (value, index) pairs, ``kthvalue`` its own quickselect
(``quick_select_template``: Sedgewick's partitioning around a median-of-three pivot), ``topk``
libstdc++'s ``std::partial_sort`` (k · 64 <= n) or ``std::nth_element`` then ``std::sort`` of the first
k - 1, and ``mode`` ``std::sort`` on (value, index) pairs compared by value. Each is deterministic, so
replaying its comparisons and swaps names the same element, and ``topk(sorted=False)`` gives the same order.
The functions below take the same steps as those algorithms (libstdc++'s introsort, heap selection and
introselect; PyTorch's quickselect), since the steps are what decide the order; the callers replay only the
slices whose answer depends on them.
"""

_THRESHOLD = 16  # libstdc++'s _S_threshold: below it, insertion sort finishes


def _log2(n):
    return n.bit_length() - 1


def _move_median_to_first(items, result, a, b, c, less):
    if less(items[a], items[b]):
        if less(items[b], items[c]):
            pick = b
        elif less(items[a], items[c]):
            pick = c
        else:
            pick = a
    elif less(items[a], items[c]):
        pick = a
    elif less(items[b], items[c]):
        pick = c
    else:
        pick = b
    items[result], items[pick] = items[pick], items[result]


def _unguarded_partition(items, first, last, pivot, less):
    while True:
        while less(items[first], items[pivot]):
            first += 1
        last -= 1
        while less(items[pivot], items[last]):
            last -= 1
        if not first < last:
            return first
        items[first], items[last] = items[last], items[first]
        first += 1


def _unguarded_partition_pivot(items, first, last, less):
    middle = first + (last - first) // 2
    _move_median_to_first(items, first, first + 1, middle, last - 1, less)
    return _unguarded_partition(items, first + 1, last, first, less)


def _unguarded_linear_insert(items, last, less):
    value = items[last]
    before = last - 1
    while less(value, items[before]):
        items[last] = items[before]
        last = before
        before -= 1
    items[last] = value


def _insertion_sort(items, first, last, less):
    if first == last:
        return
    for i in range(first + 1, last):
        if less(items[i], items[first]):
            value = items[i]
            items[first + 1:i + 1] = items[first:i]
            items[first] = value
        else:
            _unguarded_linear_insert(items, i, less)


def _final_insertion_sort(items, first, last, less):
    if last - first > _THRESHOLD:
        _insertion_sort(items, first, first + _THRESHOLD, less)
        for i in range(first + _THRESHOLD, last):
            _unguarded_linear_insert(items, i, less)
    else:
        _insertion_sort(items, first, last, less)


def _push_heap(items, first, hole, top, value, less):
    parent = (hole - 1) // 2
    while hole > top and less(items[first + parent], value):
        items[first + hole] = items[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    items[first + hole] = value


def _adjust_heap(items, first, hole, length, value, less):
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if less(items[first + child], items[first + child - 1]):
            child -= 1
        items[first + hole] = items[first + child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        items[first + hole] = items[first + child - 1]
        hole = child - 1
    _push_heap(items, first, hole, top, value, less)


def _make_heap(items, first, last, less):
    length = last - first
    if length < 2:
        return
    parent = (length - 2) // 2
    while True:
        _adjust_heap(items, first, parent, length, items[first + parent], less)
        if parent == 0:
            return
        parent -= 1


def _pop_heap(items, first, last, result, less):
    value = items[result]
    items[result] = items[first]
    _adjust_heap(items, first, 0, last - first, value, less)


def _heap_select(items, first, middle, last, less):
    _make_heap(items, first, middle, less)
    for i in range(middle, last):
        if less(items[i], items[first]):
            _pop_heap(items, first, middle, i, less)


def _partial_sort_range(items, first, middle, last, less):
    _heap_select(items, first, middle, last, less)
    while middle - first > 1:  # __sort_heap
        middle -= 1
        _pop_heap(items, first, middle, middle, less)


def _introsort_loop(items, first, last, depth, less):
    while last - first > _THRESHOLD:
        if depth == 0:
            _partial_sort_range(items, first, last, last, less)
            return
        depth -= 1
        cut = _unguarded_partition_pivot(items, first, last, less)
        _introsort_loop(items, cut, last, depth, less)
        last = cut


def std_sort(items, last, less):
    """std::sort(items[0:last]) in place."""
    if last > 0:
        _introsort_loop(items, 0, last, 2 * _log2(last), less)
        _final_insertion_sort(items, 0, last, less)


def std_partial_sort(items, middle, less):
    """std::partial_sort(begin, begin + middle, end) in place."""
    _partial_sort_range(items, 0, middle, len(items), less)


def std_nth_element(items, nth, less):
    """std::nth_element(begin, begin + nth, end) in place."""
    first, last = 0, len(items)
    if first == last or nth == last:
        return
    depth = 2 * _log2(last - first)
    while last - first > 3:
        if depth == 0:
            _heap_select(items, first, nth + 1, last, less)
            items[first], items[nth] = items[nth], items[first]
            return
        depth -= 1
        cut = _unguarded_partition_pivot(items, first, last, less)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(items, first, last, less)


def _greater_nan_first(x, y):
    """PyTorch's comparison for the largest first: NaN above every number."""
    return (x[0] != x[0] and y[0] == y[0]) or x[0] > y[0]


def _less_nan_last(x, y):
    """PyTorch's comparison for the smallest first: NaN above every number."""
    return (x[0] == x[0] and y[0] != y[0]) or x[0] < y[0]


def sort_indices(row, descending):
    """The indices PyTorch's (non-stable) sort gives for one slice: std::sort of its (value, index) pairs."""
    items = [(value, j) for j, value in enumerate(row)]
    std_sort(items, len(items), _greater_nan_first if descending else _less_nan_last)
    return [j for _, j in items]


def topk_indices(row, k, largest, sorted):
    """The indices PyTorch's topk gives for one slice (``row`` a list of its values)."""
    items = [(value, j) for j, value in enumerate(row)]
    less = _greater_nan_first if largest else _less_nan_last
    if k * 64 <= len(items):
        std_partial_sort(items, k, less)
    else:
        std_nth_element(items, k - 1, less)
        if sorted:
            std_sort(items, k - 1, less)
    return [j for _, j in items[:k]]


def mode_index(row):
    """The index PyTorch's mode gives for one slice: the last of the most frequent (smallest such) value's run
    once std::sort has ordered the (value, index) pairs by value. Python's float `<` and `!=` are C++'s, so a
    NaN (less than nothing, nothing less than it; unequal to itself) is replayed as PyTorch leaves it."""
    items = [(value, j) for j, value in enumerate(row)]
    std_sort(items, len(items), lambda x, y: x[0] < y[0])
    best, best_count, count = 0, 0, 0
    for i, (value, j) in enumerate(items):
        count += 1
        if i == len(items) - 1 or value != items[i + 1][0]:
            if count > best_count:
                best, best_count = j, count
            count = 0
    return best


def unordered_nth_index(n):
    """The index std::nth_element(begin, begin, end) leaves at the front of n elements none of which is less
    than another (PyTorch's nanmedian of a slice of NaN only: its comparison orders no NaN before another)."""
    items = list(range(n))
    std_nth_element(items, 0, lambda x, y: False)
    return items[0]


def quick_select_index(row, k):
    """The index PyTorch's kthvalue gives for one slice: the element its quick_select_template leaves at
    position k (NaN largest)."""
    values, where = list(row), list(range(len(row)))

    def greater(x, y):
        return (x != x and y == y) or x > y

    def swap(i, j):
        values[i], values[j] = values[j], values[i]
        where[i], where[j] = where[j], where[i]

    low, high = 0, len(values) - 1
    while high > low:
        if high == low + 1:
            if greater(values[low], values[high]):
                swap(low, high)
            break
        swap((low + high) >> 1, low + 1)
        if greater(values[low + 1], values[high]):
            swap(low + 1, high)
        if greater(values[low], values[high]):
            swap(low, high)
        if greater(values[low + 1], values[low]):
            swap(low + 1, low)
        i, j, pivot = low + 1, high, values[low]
        while True:
            i += 1
            while greater(pivot, values[i]):
                i += 1
            j -= 1
            while greater(values[j], pivot):
                j -= 1
            if j < i:
                break
            swap(i, j)
        swap(low, j)
        if j <= k:
            low = i
        if j >= k:
            high = j - 1
    return where[k]

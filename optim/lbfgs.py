"""L-BFGS: quasi-Newton steps from a limited memory of past gradient changes, with an
optional strong-Wolfe line search (a port of PyTorch's, itself from minFunc/torch7)."""

import math

from autograd import Tensor, cat, enable_grad, no_grad, zeros

from .optimizer import Optimizer, real_pairs


class LBFGS(Optimizer):
    """L-BFGS (Nocedal, 1980; Liu & Nocedal, 1989), as ``torch.optim.LBFGS``.

    Each ``step(closure)`` runs up to ``max_iter`` iterations on the flattened
    parameters x with gradient g:

        y = g_k - g_{k-1},  s = x_k - x_{k-1}       kept if yᵀs > 1e-10 (the last history_size pairs)
        H₀ = yᵀs / yᵀy                              (scale of the initial inverse Hessian)
        d = -H g  by the two-loop recursion:
            q ← -g;  for i newest→oldest: αᵢ = ρᵢ sᵢᵀq,  q ← q - αᵢ yᵢ      (ρᵢ = 1 / yᵢᵀsᵢ)
            r ← H₀ q; for i oldest→newest: βᵢ = ρᵢ yᵢᵀr,  r ← r + (αᵢ - βᵢ) sᵢ
        x ← x + t d

    t is ``lr`` (the first iteration ever: min(1, 1/‖g‖₁) · lr), or, with
    ``line_search_fn='strong_wolfe'``, a step satisfying the strong Wolfe conditions
        f(x + t d) ≤ f(x) + c₁ t gᵀd,   |g(x + t d)ᵀd| ≤ c₂ |gᵀd|   (c₁ = 1e-4, c₂ = 0.9)
    found by bracketing and cubic interpolation. Iterations stop early when
    max|g| ≤ tolerance_grad, when a step or the change in loss is below
    tolerance_change, or after max_eval closure calls (default max_iter · 5/4).

    The closure re-evaluates the model and returns the loss (it runs with grad
    enabled). One parameter group only; the state lives under the first parameter.
    ρᵢ, αᵢ, H₀ and gᵀd are 0-d tensors of the parameters' dtype, as PyTorch's (its
    state dict holds them so), and t is one wherever PyTorch's is (the first iteration's
    min(1, 1/‖g‖₁) · lr, and what the line search computes from gᵀd): with float32
    parameters the line search's arithmetic rounds to float32 as PyTorch's, so the
    trajectories agree in float32 as in float64.
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, history_size=history_size,
                                      line_search_fn=line_search_fn))
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]
        self._numel_cache = None

    def _numel(self):
        """How many numbers the parameters hold (counted once), PyTorch's method: code written against
        PyTorch's LBFGS calls it to size a flat vector."""
        if self._numel_cache is None:
            self._numel_cache = sum(2 * p.numel() if p.dtype.kind == "c" else p.numel() for p in self._params)
        return self._numel_cache

    def __setstate__(self, state):
        # PyTorch's copy has no _params, so its step raises AttributeError; ours steps as the original
        super().__setstate__(state)
        self._params = self.param_groups[0]["params"]
        self._numel_cache = None

    def add_param_group(self, param_group):
        group = self._named_group(param_group)  # (its errors first, as PyTorch's)
        if "_params" in self.__dict__:  # (the groups given to the constructor are all checked first)
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        super().add_param_group(group)

    # -- the parameters as one flat vector ------------------------------------------------

    def _real_params(self):
        """The parameters as real numbers: a complex one as its (real, imaginary) pairs, as PyTorch's."""
        return [real_pairs(p) if p.dtype.kind == "c" else p for p in self._params]

    def _gather_flat_grad(self):
        grads = [None if p.grad is None else (real_pairs(p.grad) if p.dtype.kind == "c" else
                                              p.grad.to_dense() if p.grad.is_sparse else p.grad)
                 for p in self._params]
        return cat([zeros(x.numel(), dtype=x.dtype) if g is None else g.reshape(-1)
                    for x, g in zip(self._real_params(), grads)])

    def _add_grad(self, step_size, direction):
        """x ← x + step_size · direction, parameter by parameter."""
        offset = 0
        for p in self._real_params():
            numel = p.numel()
            p.add_(direction[offset:offset + numel].view_as(p), alpha=step_size)
            offset += numel

    def _clone_param(self):
        return [p.detach().clone() for p in self._params]

    def _set_param(self, values):
        for p, value in zip(self._params, values):
            p.copy_(value)

    def _directional_evaluate(self, closure, x, t, d):
        """f and ∇f at x + t d, leaving the parameters at x."""
        self._add_grad(t, d)
        with enable_grad():
            loss = closure()
        loss = float(loss)  # under no_grad, as PyTorch's: float() of a loss that requires grad warns only with grad on
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    # -- the iteration ----------------------------------------------------------------------

    def step(self, closure):
        """Run up to max_iter L-BFGS iterations; returns the loss of the first closure call."""
        with no_grad():
            return self._step(closure)

    def _step(self, closure):
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]

        state = self.state.setdefault(self._params[0], {})
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        with enable_grad():
            orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1

        flat_grad = self._gather_flat_grad()
        opt_cond = flat_grad.abs().max() <= tolerance_grad  # (in the parameters' dtype, as every test below)
        if opt_cond:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag, prev_flat_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # the descent direction
            if state["n_iter"] == 1:
                d = flat_grad.neg()
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y @ s
                if ys > 1e-10:  # keep the pair only where the curvature is positive
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(ys.reciprocal())
                    H_diag = ys / (y @ y)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                q = flat_grad.neg()
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = (old_stps[i] @ q) * ro[i]
                    q.add_(old_dirs[i], alpha=-al[i].item())
                d = r = q * H_diag
                for i in range(len(old_dirs)):
                    be_i = (old_dirs[i] @ r) * ro[i]
                    r.add_(old_stps[i], alpha=(al[i] - be_i).item())

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.clone()
            else:
                prev_flat_grad.copy_(flat_grad)
            prev_loss = loss

            # the step length
            if state["n_iter"] == 1:  # (a 0-d tensor where 1/‖g‖₁ < 1, as PyTorch's)
                t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr
            else:
                t = lr
            gtd = flat_grad @ d
            if gtd > -tolerance_change:  # not a descent direction any more
                break

            ls_func_evals = 0
            if line_search_fn is not None:
                if line_search_fn != "strong_wolfe":
                    raise RuntimeError("only 'strong_wolfe' is supported")
                x_init = self._clone_param()

                def obj_func(x, t, d):
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = strong_wolfe(obj_func, x_init, t, d, loss, flat_grad, gtd,
                                                                 max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = flat_grad.abs().max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:  # the last iteration's loss is left to the next step
                    with enable_grad():
                        loss = closure()
                    loss = float(loss)  # outside enable_grad, as in _directional_evaluate
                    flat_grad = self._gather_flat_grad()
                    opt_cond = flat_grad.abs().max() <= tolerance_grad
                    ls_func_evals = 1

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if (d * t).abs().max() <= tolerance_change:  # the step no longer moves x
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2,
    clipped to ``bounds`` (default: between x1 and x2):

        d₁ = g₁ + g₂ - 3 (f₁ - f₂)/(x₁ - x₂),   d₂ = √(d₁² - g₁ g₂)
        x = x₂ - (x₂ - x₁)(g₂ + d₂ - d₁)/(g₂ - g₁ + 2 d₂)       (x₁ ≤ x₂; mirrored otherwise)

    With no real minimiser (d₁² < g₁ g₂, or NaN: a loss that was NaN), the middle of the bounds, as PyTorch's.
    The slopes g come as 0-d tensors from the line search, and the arithmetic is then theirs (in the parameters'
    dtype, as PyTorch's); plain numbers work too."""
    xmin_bound, xmax_bound = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if not d2_square >= 0:
        return (xmin_bound + xmax_bound) / 2.0
    d2 = d2_square.sqrt() if isinstance(d2_square, Tensor) else math.sqrt(d2_square)
    if x1 <= x2:
        min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(min_pos, xmin_bound), xmax_bound)


def strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """A step t along d satisfying the strong Wolfe conditions (see LBFGS), PyTorch's
    (minFunc's) two phases: grow t until an interval [t_prev, t] brackets such a point,
    then zoom: shrink the bracket by safeguarded cubic interpolation.
    gtd (gᵀd) and the slopes it computes are 0-d tensors, and t becomes one, as PyTorch's: its tests and
    interpolations round to the parameters' dtype.
    Returns (f, g, t, number of evaluations) at the chosen point."""
    d_norm = d.abs().max()
    g = g.clone()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = g_new @ d

    # bracketing phase
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.clone()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.clone()], [gtd_prev, gtd_new]
            break
        # extrapolate: the cubic's minimiser between 1.01 t and 10 t
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        previous = t
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = previous, f_new, g_new.clone(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new @ d
        ls_iter += 1

    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # zoom phase
    insufficient_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:  # the bracket is too small
            break
        t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])

        # Too close to an end of the bracket: if the last step was also too close (or t is
        # at or beyond an end), move t to 10% of the bracket away from the nearest end.
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insufficient_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new @ d
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # no sufficient decrease, or not below the lowest point: t becomes the high end
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.clone(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True  # the Wolfe conditions hold
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # the old high end becomes the low end
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.clone(), gtd_new

    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


# PyTorch's names for the line search's helpers (code that writes its own quasi-Newton loop imports them)
_cubic_interpolate = cubic_interpolate
_strong_wolfe = strong_wolfe

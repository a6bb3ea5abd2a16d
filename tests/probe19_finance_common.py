"""What the files of session 19's quantitative-finance probe (tests/test_programs_probe19_finance_*.py, one area of
finance each) share: the normal distribution's CDF and density, and Black-Scholes' closed form.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same seeds and data,
comparing prices, Greeks, fitted parameters and trajectories, and checked against closed forms or NumPy by hand."""

import math

import numpy as np


def norm_cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(np.asarray(x) / math.sqrt(2)))


def norm_pdf(x):
    return np.exp(-0.5 * np.asarray(x) ** 2) / math.sqrt(2 * math.pi)


def bs_closed_form(S, K, T, r, sigma):
    """Black-Scholes call price and Greeks by hand (NumPy)."""
    d1 = (np.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * np.sqrt(T))
    d2 = d1 - sigma * np.sqrt(T)
    price = S * norm_cdf(d1) - K * np.exp(-r * T) * norm_cdf(d2)
    return dict(
        price=price,
        delta=norm_cdf(d1),
        gamma=norm_pdf(d1) / (S * sigma * np.sqrt(T)),
        vega=S * norm_pdf(d1) * np.sqrt(T),
        theta=-S * norm_pdf(d1) * sigma / (2 * np.sqrt(T)) - r * K * np.exp(-r * T) * norm_cdf(d2),
        rho=K * T * np.exp(-r * T) * norm_cdf(d2),
        vanna=-norm_pdf(d1) * d2 / sigma,
        volga=S * norm_pdf(d1) * np.sqrt(T) * d1 * d2 / sigma,
    )

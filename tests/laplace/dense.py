"""Brute-force dense references (float64): Jacobians by torch.autograd.functional.jacobian,
loss Hessians by torch.autograd.functional.hessian of independently written log-likelihoods."""

import math

import torch
from torch.func import functional_call


def flat_fn(model, names=None, link=lambda f: f):
    params = dict(model.named_parameters())
    names = list(params) if names is None else names
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])

    def unflat(v):
        d, o = {}, 0
        for n in names:
            k = params[n].numel()
            d[n] = v[o : o + k].reshape(params[n].shape)
            o += k
        return d

    def f(v, X):
        return link(functional_call(model, unflat(v), (X,)))

    return flat, f


def jacobian(model, X, names=None, link=lambda f: f):
    """(N, O, P) Jacobian of the flattened outputs."""
    flat, f = flat_fn(model, names, link)
    J = torch.autograd.functional.jacobian(lambda v: f(v, X).reshape(X.shape[0], -1), flat)
    return J, f(flat, X).detach().reshape(X.shape[0], -1)


def nll_single(likelihood, eta, y):
    """Negative log-likelihood of one sample (eta: (O,)), written independently of the library."""
    if likelihood == "regression":
        return 0.5 * ((y - eta) ** 2).sum()
    if likelihood == "classification":
        return -torch.log_softmax(eta, -1)[y]
    if likelihood == "binary":
        p = torch.sigmoid(eta[0])
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    if likelihood == "heteroscedastic":
        eta1, eta2 = eta[0], eta[1]
        var = -1 / (2 * eta2)
        mu = eta1 * var
        return 0.5 * torch.log(2 * math.pi * var) + 0.5 * (y - mu) ** 2 / var
    raise ValueError(likelihood)


def dense_ggn(model, X, y, likelihood, names=None, link=lambda f: f):
    J, eta = jacobian(model, X, names, link)
    G = 0
    for n in range(X.shape[0]):
        H = torch.autograd.functional.hessian(
            lambda e, n=n: nll_single(likelihood, e, y[n]), eta[n]
        )
        G = G + J[n].T @ H @ J[n]
    return G


def dense_ef(model, X, y, likelihood, names=None, link=lambda f: f):
    flat, f = flat_fn(model, names, link)
    E = 0
    for n in range(X.shape[0]):
        v = flat.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nll_single(likelihood, f(v, X[n : n + 1])[0], y[n]), v)
        E = E + torch.outer(g, g)
    return E

"""Dense float64 references for LA-NAM's curvature: autograd Jacobians per subnetwork block."""

import torch
from torch.func import functional_call, jacrev

from workbench.nam.modules import AdditiveNet

LIKS = [("regression", 1), ("binary", 1), ("multiclass", 3)]


def _model(k, seed=0):
    torch.manual_seed(seed)
    m = AdditiveNet(n_numeric=3, n_levels=[3, 2], n_out=k, n_hidden=5, seed=seed, dtype=torch.float64)
    m.add_pairs([(0, 2), (1, 2)], seed=seed)
    with torch.no_grad():  # make every block non-trivial (tables and pair outputs start at 0)
        for g in m.groups.values():
            for p in g.parameters():
                p.add_(0.3 * torch.randn_like(p))
        m.groups["categorical"].table[1, 2:] = 0.0  # padded level of the 2-level table stays 0
    return m


def _data(n, k, seed=1, missing=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    if missing:  # about a quarter of every numeric column missing (NaN)
        x = torch.where(torch.rand(n, 3, generator=g) < 0.25, torch.nan, x)
    c = torch.stack([torch.randint(0, 3, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)], 1)
    y = torch.randn(n, generator=g, dtype=torch.float64) if k == 1 else torch.randint(0, k, (n,), generator=g)
    return x, c, y


def _dense_jacobians(model, x, c):
    """Autograd Jacobian of the summed output w.r.t. every parameter tensor."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x, c)))(params)
    return jac  # name -> (N, K, *param.shape)


def _block(jac, model, group, s):
    """Dense (N, K, P) Jacobian of subnetwork s in the module's flat parameter order."""
    names = {"numeric": ["w1", "b1", "w2", "b2"], "pair": ["w1", "b1", "w2", "b2"],
             "categorical": ["table"], "bias": ["bias"], "missing": ["offset"]}[group]
    parts = []
    for nm in names:
        j = jac[f"groups.{group}.{nm}"]
        j = j.unsqueeze(2) if group == "bias" else j[:, :, s]
        parts.append(j.reshape(j.shape[0], j.shape[1], -1))
    return torch.cat(parts, -1)


def _dense_lambda(f, lik):
    if lik == "regression":
        return torch.eye(f.shape[1], dtype=f.dtype).expand(f.shape[0], -1, -1)
    # Hessian of the NLL w.r.t. the outputs by autograd, sample by sample.
    def nll(fi):
        if lik == "binary":
            return torch.nn.functional.softplus(fi).sum()  # label-free: Hessian is p(1-p)
        return torch.logsumexp(fi, 0)
    return torch.stack([torch.autograd.functional.hessian(nll, fi) for fi in f])


def _flat(model, group, s):
    m = model.groups[group]
    return m.flat()[s].detach().numpy()

"""Curvature engines: module-level (KFAC factors, fast exact diagonal) and torch.func Jacobians."""

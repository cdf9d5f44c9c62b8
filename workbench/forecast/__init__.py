"""ZAPBench-style whole-brain activity forecasting: data, protocol, metrics and baselines.

See docs/architecture.md, section "Forecast API (`workbench.forecast`)".
"""

from . import protocol
from .dataset import (
    build_dataset,
    generate,
    load_or_generate,
    open_dataset,
    save_dataset,
    store_path,
    validate_dataset,
)
from .dff import delta_f_over_f, sliding_percentile
from .protocol import gather, windows
from .segments import segment_counts, segment_means
from .synthetic import PRESETS, SyntheticConfig

__all__ = [
    "protocol", "build_dataset", "generate", "load_or_generate", "open_dataset", "save_dataset",
    "store_path", "validate_dataset", "delta_f_over_f", "sliding_percentile", "gather", "windows",
    "segment_counts", "segment_means", "PRESETS", "SyntheticConfig",
]

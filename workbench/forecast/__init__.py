"""ZAPBench-style whole-brain activity forecasting: data, protocol, metrics and baselines.

See docs/architecture.md, section "Forecast API (`workbench.forecast`)".
"""

from . import protocol
from .bootstrap import block_bootstrap_ci
from .dataset import (
    DamagedStoreError,
    build_dataset,
    cached_dataset,
    generate,
    load_or_generate,
    make_dataset,
    open_dataset,
    save_dataset,
    store_path,
    validate_dataset,
)
from .dff import delta_f_over_f, sliding_percentile
from .evaluate import Forecaster, evaluate, evaluate_loop, score_forecaster
from .metrics import aggregate, summarize, window_errors
from .protocol import gather, windows
from .release import open_release, write_release_layout
from .segments import segment_counts, segment_means
from .synthetic import PRESETS, SyntheticConfig
from .zapbench_results import load_zapbench_results, to_zapbench_records, write_zapbench_json

__all__ = [
    "protocol", "build_dataset", "make_dataset", "cached_dataset", "generate", "load_or_generate",
    "DamagedStoreError", "open_dataset", "save_dataset",
    "store_path", "validate_dataset", "delta_f_over_f", "sliding_percentile", "gather", "windows",
    "segment_counts", "segment_means", "PRESETS", "SyntheticConfig", "block_bootstrap_ci",
    "Forecaster", "evaluate", "evaluate_loop", "score_forecaster", "aggregate", "summarize", "window_errors",
    "open_release", "write_release_layout", "load_zapbench_results", "to_zapbench_records",
    "write_zapbench_json",
]

"""Reading TensorBoard event files back with TensorBoard's own reader."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_events(log_dir: Path) -> EventAccumulator:
    """All event files under ``log_dir`` (one run directory), every value kept."""
    accumulator = EventAccumulator(str(log_dir), size_guidance={"histograms": 0, "scalars": 0, "tensors": 0})
    return accumulator.Reload()

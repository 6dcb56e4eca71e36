"""Hardware/thermal monitoring: sensors -> policy -> continue/pause/stop for the trainer.

``sensors`` reads (NVML, Linux psutil/sysfs, macOS, none), ``policy`` classifies a reading,
``monitor`` samples in a background thread and answers the trainer. See
``HardwareMonitor`` for the trainer integration.
"""

from finscale.monitor.monitor import (
    HardwareMonitor,
    SensorUnavailableError,
    iter_readings,
    read_hardware_log,
)
from finscale.monitor.policy import STATES, action_for, classify, is_cool
from finscale.monitor.sensors import Reading, open_backend

__all__ = ["HardwareMonitor", "SensorUnavailableError", "iter_readings", "read_hardware_log",
           "STATES", "action_for", "classify", "is_cool", "Reading", "open_backend"]

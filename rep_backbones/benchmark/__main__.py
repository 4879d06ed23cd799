"""``python -m rep_backbones.benchmark CASE_JSON``: the peak-memory probe's fresh process
(:func:`rep_backbones.benchmark.memory.measure_memory_in_subprocess` starts it)."""
import sys

from .memory import probe_main

probe_main(sys.argv[1])

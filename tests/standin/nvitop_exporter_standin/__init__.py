"""Stand-in for nvitop-exporter 1.7.2 (tests only): serves the real H200 capture, no NVML."""

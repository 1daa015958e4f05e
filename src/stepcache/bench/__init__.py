"""Speed and quality measurement: MACs, wall time, fidelity, and the harness that runs them."""

"""The rows of bench/fanout.py, one module per measured row, plus what the runstate rows
share (`runs`, `podwatch`, `result`), the three suites that put rows together (`suites`)
and their printed reports (`report`).

Owns what the fan-out benchmark measures and checks. Must not start the control plane, Redis
or the SSH test hosts (bench/fanout.py does, and stops them), nor hold mechanics another
benchmark could use (those belong in `harness`).
"""

"""What the benchmark scripts share: processes, CPU sampling, waiting, the kube client,
Prometheus scraping, markdown tables and scratch dirs.

Owns the mechanics every bench needs, one module per concern. Must not hold anything one
benchmark measures or reports on its own (those live in `fanout_rows`, `store_rows` or the
script), nor import from them. The scripts in bench/ run with bench/ as sys.path[0], so this
package is imported as `harness`.
"""

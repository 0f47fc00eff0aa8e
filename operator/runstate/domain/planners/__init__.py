"""The engine's stage planners: Connect, Prepare, Execute, then the verdict and the summary.

Each planner is a pure function over one `AttemptView` (the run's units, indexed once) that
returns a small frozen record; those that start units do so through the shared, budgeted
`Starter`. None of them moves the run's state: `engine` composes them and turns their records
into Prefect-state transitions. No I/O, no Kubernetes, no kopf.
"""

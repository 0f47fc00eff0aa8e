"""pyinfra operations as runstate sees them outside the runner: what a Runbook may name.

Modules: ``catalog`` (is ``module.function`` an operation of pyinfra's library, and do the
arguments fit its signature). Pure: imports pyinfra's operation modules for their signatures
only; must not import kopf, kubernetes or redis, nor connect anywhere.
"""

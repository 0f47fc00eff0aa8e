"""The runner: what a work pod runs (``runstate exec``) for one operation × host.

It connects to the host (``ssh``) or stays in the pod (``local``, the ``pod`` connector), runs
the command, streams its output to stdout (the pod log) and writes a small typed JSON result
(``result.UnitOutcome``) to the termination message, and exits with a code that tells success
from failure (``result.process_exit_code``).

Modules: ``result`` (the outcome, its bounded JSON, the exit-code rule), ``output`` (the tail
kept for the result), ``ssh`` (asyncssh: connect, classify failures, run), ``local`` (``sh -c``),
``pyinfra`` (a package: pyinfra units, pyinfra loaded only when one runs), ``cli`` (the command
line). The runner runs inside a pod and talks to hosts, never to the
Kubernetes API: it must not import kopf, kubernetes_asyncio or the operator's controller,
handlers or kube packages (an import-linter contract in pyproject.toml).
"""

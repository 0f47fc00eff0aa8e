"""`kubectl runstate`: the kubectl plugin (console script `kubectl-runstate`).

It talks to the API server through `kubectl` subprocesses rather than a Kubernetes client
library. The plugin is run by people from their shell, next to `kubectl`: calling `kubectl`
makes it honour exactly what the user has configured (kubeconfig, contexts, exec credential
plugins, proxies, `-n`) with no second implementation of kubeconfig loading, and errors read
as kubectl's own. The plugin stays synchronous and small, and its tests swap the one runner
(`kube.Kubectl`) for a fake. The cost, one process per call, is nothing at a human's pace
(`watch` polls once a second).

Modules: `specs` (pure: Run bodies for start and retry, final outcomes, pod selection),
`render` (pure: a Run's status as text and as a rich view), `kube` (the kubectl runner) and
`cli` (arguments and commands). None imports kopf, the controller or the handlers
(an import-linter contract in pyproject.toml).
"""

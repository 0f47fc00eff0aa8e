"""The API group of the custom resources: `runstate.dev/v1alpha1`, and the Run's finalizer.

Owns the names every other part of the operator uses to address the resources (group, version,
apiVersion) and the finalizer's name. Constants only: must not import anything, not even the
other modules of this package.
"""

from __future__ import annotations

GROUP = "runstate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# Kept on a Run while it has pods or hot state to clean up: deleting the Run cancels it first.
FINALIZER = f"{GROUP}/cleanup"

"""Runtime helpers shared by the cdk-opskit Lambda functions, shipped as a layer.

Modules are imported individually (``from opskit_common.events import require``)
so that a handler pays only for what it uses at cold start.
"""

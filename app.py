#!/usr/bin/env python3
"""CDK entry point: `npx cdk synth --context environment=prod` (dev when omitted)."""

import sys

import aws_cdk as cdk

from opskit import OpsKitError
from stacks.app import build

app = cdk.App()
try:
    build(app)
except OpsKitError as error:
    sys.exit(f"opskit: {error}")
app.synth()

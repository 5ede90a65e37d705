#!/usr/bin/env python3
"""CDK entry point: `npx cdk synth --context environment=prod` (dev when omitted)."""

import sys

import aws_cdk as cdk

from stacks.app import build
from stacks.config import ConfigError

app = cdk.App()
try:
    build(app)
except ConfigError as error:
    sys.exit(f"opskit: {error}")
app.synth()
